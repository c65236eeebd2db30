// c-copy-method: the plugin template (plugins/template) in C, to show that a plugin need
// not be written in Rust. It keeps the requested copy method; with none, it uses the
// `default_method` setting ("direct", "clone" or "snapshot"; "direct" when unset). A
// Snapshot takes the first of the driver's snapshot classes. It is meant to pass the same
// golden table (tests.json here) as its Rust twin; not built by CI yet (work in progress:
// the bindings' names below are those wit-bindgen's C generator is expected to emit).
//
// Bindings: `wit-bindgen c plugins/wit --world copy-method` (scripts/build-c-tools.sh).
// No WASI call is made, so the component imports nothing but what the world names.

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "copy_method.h"

typedef copy_method_string_t str_t;

// Sets `out` to a fresh copy of the C string `s` (the host frees what it is handed).
static void set_str(str_t *out, const char *s) {
    size_t n = strlen(s);
    out->ptr = (uint8_t *)malloc(n ? n : 1);
    memcpy(out->ptr, s, n);
    out->len = n;
}

static void set_copy(str_t *out, const str_t *in) {
    out->ptr = (uint8_t *)malloc(in->len ? in->len : 1);
    memcpy(out->ptr, in->ptr, in->len);
    out->len = in->len;
}

// Skips JSON whitespace.
static size_t skip_ws(const uint8_t *p, size_t i, size_t n) {
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r')) i++;
    return i;
}

// Reads a JSON string without escapes at p[i] ('"' expected); its bounds go to
// start/len. Returns the index after it, or 0 when it is not such a string.
static size_t read_string(const uint8_t *p, size_t i, size_t n, size_t *start, size_t *len) {
    if (i >= n || p[i] != '"') return 0;
    size_t s = ++i;
    while (i < n && p[i] != '"') {
        if (p[i] == '\\') return 0;
        i++;
    }
    if (i >= n) return 0;
    *start = s;
    *len = i - s;
    return i + 1;
}

enum settings_result { SETTINGS_OK, SETTINGS_INVALID, SETTINGS_UNKNOWN_FIELD };

// Parses the settings: empty, or a flat JSON object whose only field is
// "default_method" with a string value (the Rust twin refuses unknown fields too).
static enum settings_result parse_settings(const str_t *json, size_t *value, size_t *value_len,
                                           bool *present) {
    const uint8_t *p = json->ptr;
    size_t n = json->len, i = skip_ws(p, 0, n);
    *present = false;
    if (i == n) return SETTINGS_OK;
    if (p[i] != '{') return SETTINGS_INVALID;
    i = skip_ws(p, i + 1, n);
    if (i < n && p[i] == '}') return skip_ws(p, i + 1, n) == n ? SETTINGS_OK : SETTINGS_INVALID;
    for (;;) {
        size_t ks, kl, vs, vl;
        i = read_string(p, i, n, &ks, &kl);
        if (!i) return SETTINGS_INVALID;
        i = skip_ws(p, i, n);
        if (i >= n || p[i] != ':') return SETTINGS_INVALID;
        i = skip_ws(p, i + 1, n);
        if (kl != strlen("default_method") || memcmp(p + ks, "default_method", kl) != 0)
            return SETTINGS_UNKNOWN_FIELD;
        if (i < n && p[i] == 'n' && n - i >= 4 && memcmp(p + i, "null", 4) == 0) {
            i += 4;
        } else {
            i = read_string(p, i, n, &vs, &vl);
            if (!i) return SETTINGS_INVALID;
            *value = vs;
            *value_len = vl;
            *present = true;
        }
        i = skip_ws(p, i, n);
        if (i < n && p[i] == ',') {
            i = skip_ws(p, i + 1, n);
            continue;
        }
        if (i < n && p[i] == '}') return skip_ws(p, i + 1, n) == n ? SETTINGS_OK : SETTINGS_INVALID;
        return SETTINGS_INVALID;
    }
}

static bool equals(const uint8_t *p, size_t len, const char *s) {
    return len == strlen(s) && memcmp(p, s, len) == 0;
}

bool exports_copy_method_decide(copy_method_copy_method_input_t *input,
                                copy_method_copy_method_decision_t *ret, str_t *err) {
    size_t vs = 0, vl = 0;
    bool configured;
    switch (parse_settings(&input->settings, &vs, &vl, &configured)) {
    case SETTINGS_OK:
        break;
    case SETTINGS_UNKNOWN_FIELD:
        set_str(err, "invalid settings: unknown field; the only field is `default_method`");
        return false;
    default:
        set_str(err, "invalid settings: not a JSON object of strings");
        return false;
    }

    ferrosync_policy_types_method_t method;
    const char *reason;
    if (input->requested.is_some) {
        method = input->requested.val;
        reason = "the requested method";
    } else if (!configured || equals(input->settings.ptr + vs, vl, "direct")) {
        method = FERROSYNC_POLICY_TYPES_METHOD_DIRECT;
        reason = "nothing requested";
    } else if (equals(input->settings.ptr + vs, vl, "clone")) {
        method = FERROSYNC_POLICY_TYPES_METHOD_CLONE;
        reason = "the configured default";
    } else if (equals(input->settings.ptr + vs, vl, "snapshot")) {
        method = FERROSYNC_POLICY_TYPES_METHOD_SNAPSHOT;
        reason = "the configured default";
    } else {
        set_str(err, "unknown default_method");
        return false;
    }

    memset(ret, 0, sizeof *ret);
    ret->method = method;
    if (method == FERROSYNC_POLICY_TYPES_METHOD_SNAPSHOT && input->snapshot_classes.len > 0) {
        ret->volume_snapshot_class.is_some = true;
        set_copy(&ret->volume_snapshot_class.val, &input->snapshot_classes.ptr[0]);
    }
    set_str(&ret->reason, reason);
    copy_method_copy_method_input_free(input);
    return true;
}
