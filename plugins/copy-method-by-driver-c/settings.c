// A small JSON reader for the settings, strict where serde is strict in the Rust twin:
// unknown or repeated fields, wrong types and trailing text are refused, so one bundle
// means the same thing to both plugins.
#include "settings.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const uint8_t *p;
    size_t n, i;
    const char *err; // the first problem; once set, every reader returns false
} reader_t;

static bool fail(reader_t *r, const char *why) {
    if (!r->err) r->err = why;
    return false;
}

static void skip_ws(reader_t *r) {
    while (r->i < r->n && (r->p[r->i] == ' ' || r->p[r->i] == '\t' || r->p[r->i] == '\n' ||
                           r->p[r->i] == '\r'))
        r->i++;
}

// Consumes `c` (after whitespace) when it comes next.
static bool eat(reader_t *r, char c) {
    skip_ws(r);
    if (r->i < r->n && r->p[r->i] == c) {
        r->i++;
        return true;
    }
    return false;
}

static bool eat_word(reader_t *r, const char *word) {
    size_t len = strlen(word);
    skip_ws(r);
    if (r->n - r->i >= len && memcmp(r->p + r->i, word, len) == 0) {
        r->i += len;
        return true;
    }
    return false;
}

static void put_utf8(uint8_t *out, size_t *len, uint32_t c) {
    if (c < 0x80) {
        out[(*len)++] = (uint8_t)c;
    } else if (c < 0x800) {
        out[(*len)++] = (uint8_t)(0xC0 | c >> 6);
        out[(*len)++] = (uint8_t)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        out[(*len)++] = (uint8_t)(0xE0 | c >> 12);
        out[(*len)++] = (uint8_t)(0x80 | (c >> 6 & 0x3F));
        out[(*len)++] = (uint8_t)(0x80 | (c & 0x3F));
    } else {
        out[(*len)++] = (uint8_t)(0xF0 | c >> 18);
        out[(*len)++] = (uint8_t)(0x80 | (c >> 12 & 0x3F));
        out[(*len)++] = (uint8_t)(0x80 | (c >> 6 & 0x3F));
        out[(*len)++] = (uint8_t)(0x80 | (c & 0x3F));
    }
}

static bool read_hex4(reader_t *r, uint32_t *out) {
    if (r->n - r->i < 4) return fail(r, "a short \\u escape");
    *out = 0;
    for (int k = 0; k < 4; k++) {
        uint8_t h = r->p[r->i++];
        uint32_t v = h >= '0' && h <= '9'   ? (uint32_t)(h - '0')
                     : h >= 'a' && h <= 'f' ? (uint32_t)(h - 'a' + 10)
                     : h >= 'A' && h <= 'F' ? (uint32_t)(h - 'A' + 10)
                                            : 16;
        if (v == 16) return fail(r, "a bad \\u escape");
        *out = *out << 4 | v;
    }
    return true;
}

// Reads a JSON string, escapes decoded, into a fresh buffer. The input is a WIT string,
// so already valid UTF-8; a decoded string is never longer than its JSON form.
static bool read_string(reader_t *r, text_t *out) {
    if (!eat(r, '"')) return fail(r, "expected a string");
    size_t start = r->i, len = 0;
    uint8_t *buf = malloc(r->n - start + 1);
    if (!buf) return fail(r, "out of memory");
    for (;;) {
        if (r->i >= r->n) {
            free(buf);
            return fail(r, "an unterminated string");
        }
        uint8_t c = r->p[r->i++];
        if (c == '"') break;
        if (c < 0x20) {
            free(buf);
            return fail(r, "a control character in a string");
        }
        if (c != '\\') {
            buf[len++] = c;
            continue;
        }
        if (r->i >= r->n) {
            free(buf);
            return fail(r, "an unterminated string");
        }
        uint8_t e = r->p[r->i++];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            buf[len++] = (uint8_t)"\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            continue;
        }
        uint32_t cp, low;
        if (e != 'u' || !read_hex4(r, &cp)) {
            free(buf);
            return fail(r, "a bad escape in a string");
        }
        if (cp >= 0xD800 && cp < 0xDC00) {
            if (r->n - r->i < 2 || r->p[r->i] != '\\' || r->p[r->i + 1] != 'u') {
                free(buf);
                return fail(r, "a lone surrogate in a string");
            }
            r->i += 2;
            if (!read_hex4(r, &low) || low < 0xDC00 || low >= 0xE000) {
                free(buf);
                return fail(r, "a lone surrogate in a string");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        } else if (cp >= 0xDC00 && cp < 0xE000) {
            free(buf);
            return fail(r, "a lone surrogate in a string");
        }
        put_utf8(buf, &len, cp);
    }
    out->set = true;
    out->ptr = buf;
    out->len = len;
    return true;
}

static bool read_bool(reader_t *r, bool *out) {
    if (eat_word(r, "true")) *out = true;
    else if (eat_word(r, "false")) *out = false;
    else return fail(r, "expected a boolean");
    return true;
}

// A string, or null for none.
static bool read_optional_string(reader_t *r, text_t *out) {
    if (eat_word(r, "null")) return true;
    return read_string(r, out);
}

static void text_free(text_t *t) {
    free(t->ptr);
    *t = (text_t){0};
}

static bool is(const text_t *key, const char *name) {
    return key->len == strlen(name) && memcmp(key->ptr, name, key->len) == 0;
}

// Reads a JSON object, calling `field` for each member with its key (which `field` may
// keep; otherwise it is freed here).
typedef bool (*field_fn)(reader_t *r, text_t *key, void *ctx);

static bool read_object(reader_t *r, field_fn field, void *ctx) {
    if (!eat(r, '{')) return fail(r, "expected an object");
    if (eat(r, '}')) return true;
    do {
        text_t key = {0};
        if (!read_string(r, &key)) return false;
        bool ok = eat(r, ':') ? field(r, &key, ctx) : fail(r, "expected ':'");
        text_free(&key);
        if (!ok) return false;
    } while (eat(r, ','));
    return eat(r, '}') || fail(r, "expected ',' or '}'");
}

typedef struct {
    driver_t *d;
    unsigned seen;
} driver_ctx_t;

// One field of a driver; serde refuses a field given twice, and so does this.
static bool driver_field(reader_t *r, text_t *key, void *ctx) {
    static const char *const names[] = {"clone", "snapshot", "prefer", "snapshot_class",
                                        "pit_storage_class"};
    driver_ctx_t *c = ctx;
    for (unsigned k = 0; k < 5; k++) {
        if (!is(key, names[k])) continue;
        if (c->seen & 1u << k) return fail(r, "a field given twice");
        c->seen |= 1u << k;
        switch (k) {
        case 0: return read_bool(r, &c->d->clone);
        case 1: return read_bool(r, &c->d->snapshot);
        case 2: return read_optional_string(r, &c->d->prefer);
        case 3: return read_optional_string(r, &c->d->snapshot_class);
        default: return read_optional_string(r, &c->d->pit_storage_class);
        }
    }
    return fail(r, "an unknown field; a driver has clone, snapshot, prefer, snapshot_class "
                   "and pit_storage_class");
}

static void driver_free(driver_t *d) {
    text_free(&d->name);
    text_free(&d->prefer);
    text_free(&d->snapshot_class);
    text_free(&d->pit_storage_class);
}

// A driver given in the settings: a field it leaves out is false or none.
static bool read_driver(reader_t *r, driver_t *d) {
    driver_ctx_t c = {d, 0};
    return read_object(r, driver_field, &c);
}

static bool table_entry(reader_t *r, text_t *key, void *ctx) {
    settings_t *s = ctx;
    driver_t *grown = realloc(s->drivers, (s->count + 1) * sizeof *grown);
    if (!grown) return fail(r, "out of memory");
    s->drivers = grown;
    driver_t *d = &s->drivers[s->count++];
    *d = (driver_t){0};
    d->name = *key;
    *key = (text_t){0}; // kept as the driver's name
    return read_driver(r, d);
}

typedef struct {
    settings_t *s;
    unsigned seen;
} settings_ctx_t;

static bool settings_field(reader_t *r, text_t *key, void *ctx) {
    settings_ctx_t *c = ctx;
    unsigned bit = is(key, "drivers") ? 1 : is(key, "default") ? 2 : 0;
    if (!bit) return fail(r, "an unknown field; the fields are drivers and default");
    if (c->seen & bit) return fail(r, "a field given twice");
    c->seen |= bit;
    if (bit == 1) return read_object(r, table_entry, c->s);
    driver_free(&c->s->fallback);
    c->s->fallback = (driver_t){0};
    return read_driver(r, &c->s->fallback);
}

const char *settings_parse(const uint8_t *json, size_t len, settings_t *out) {
    *out = (settings_t){0};
    // A driver missing from the table, unless the settings say otherwise, does both.
    out->fallback.clone = true;
    out->fallback.snapshot = true;
    reader_t r = {json, len, 0, NULL};
    skip_ws(&r);
    if (r.i == r.n) return NULL;
    settings_ctx_t c = {out, 0};
    if (read_object(&r, settings_field, &c)) {
        skip_ws(&r);
        if (r.i == r.n) return NULL;
        fail(&r, "text after the settings");
    }
    settings_free(out);
    return r.err;
}

const driver_t *settings_driver(const settings_t *s, const uint8_t *name, size_t len) {
    for (size_t k = s->count; k-- > 0;) {
        const text_t *n = &s->drivers[k].name;
        if (n->len == len && memcmp(n->ptr, name, len) == 0) return &s->drivers[k];
    }
    return NULL;
}

void settings_free(settings_t *s) {
    for (size_t k = 0; k < s->count; k++) driver_free(&s->drivers[k]);
    free(s->drivers);
    driver_free(&s->fallback);
    *s = (settings_t){0};
}
