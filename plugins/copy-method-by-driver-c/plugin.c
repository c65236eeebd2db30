// copy-method-by-driver-c: the copy-method-by-driver plugin (plugins/copy-method-by-driver)
// written in C, to show that a plugin need not be written in Rust. Same settings, same
// rules, same reasons, word for word: its bundle (policies/aws-ebs-c) carries the Rust
// bundle's golden table, and tests/plugins/second_language.rs holds the two to one answer.
//
// Rules, in order:
// - Direct stays Direct: the user chose no copy.
// - A requested Clone that the driver cannot do, or that was seen to fail, becomes a
//   Snapshot when the driver snapshots and a class exists, else Direct.
// - A requested Snapshot the driver cannot take becomes a Clone if it can, else Direct.
// - Nothing requested: the table's `prefer`, subject to the same checks.
// It only names snapshot and storage classes that the host says exist.
//
// Built by scripts/build-c-plugins.sh: bindings from the WIT contract (c-component
// bindings), clang for wasm32-wasi with wasi-libc (for malloc and the string functions;
// no WASI call is made, so the component imports nothing but what the world names), and
// the component (c-component new).

#include <stdlib.h>
#include <string.h>

#include "copy_method.h"
#include "settings.h"

typedef copy_method_string_t str_t;
typedef ferrosync_policy_types_method_t method_t;

// A growing text, handed to the host as a WIT string (which frees it after the call).
typedef struct {
    uint8_t *ptr;
    size_t len, cap;
} buf_t;

static void add_n(buf_t *b, const void *s, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->ptr = realloc(b->ptr, b->cap);
        if (!b->ptr) abort();
    }
    memcpy(b->ptr + b->len, s, n);
    b->len += n;
}

static void add(buf_t *b, const char *s) { add_n(b, s, strlen(s)); }

// `s` quoted as Rust's `{:?}` shows a string: quotes, backslashes and ASCII control
// characters escaped. (Rust also escapes some non-ASCII characters; a provisioner name is
// a DNS subdomain, so ASCII.)
static void add_quoted(buf_t *b, const uint8_t *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    add(b, "\"");
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '"') add(b, "\\\"");
        else if (c == '\\') add(b, "\\\\");
        else if (c == '\n') add(b, "\\n");
        else if (c == '\r') add(b, "\\r");
        else if (c == '\t') add(b, "\\t");
        else if (c == 0) add(b, "\\0");
        else if (c < 0x20 || c == 0x7f) { // as `\u{1b}`: lowercase hex, no leading zero
            add(b, "\\u{");
            if (c >= 0x10) add_n(b, &hex[c >> 4], 1);
            add_n(b, &hex[c & 15], 1);
            add(b, "}");
        } else add_n(b, &c, 1);
    }
    add(b, "\"");
}

static str_t to_str(buf_t *b) {
    str_t s = {b->ptr, b->len};
    *b = (buf_t){0};
    return s;
}

static str_t copy_of(const uint8_t *p, size_t n) {
    buf_t b = {0};
    add_n(&b, p, n);
    return to_str(&b);
}

static bool text_is(const text_t *t, const char *s) {
    return t->set && t->len == strlen(s) && memcmp(t->ptr, s, t->len) == 0;
}

// The index of `name` in `list`, or -1.
static long find(const copy_method_list_string_t *list, const uint8_t *name, size_t n) {
    for (size_t i = 0; i < list->len; i++)
        if (list->ptr[i].len == n && memcmp(list->ptr[i].ptr, name, n) == 0) return (long)i;
    return -1;
}

// Decides for `in` with the parsed settings; fills `out`. Every string is a fresh copy.
static void decide(const copy_method_copy_method_input_t *in, const settings_t *settings,
                   copy_method_copy_method_decision_t *out) {
    static const uint8_t none[1];
    const uint8_t *prov = in->storage_class.is_some ? in->storage_class.val.provisioner.ptr : none;
    size_t prov_len = in->storage_class.is_some ? in->storage_class.val.provisioner.len : 0;
    const driver_t *known = settings_driver(settings, prov, prov_len);
    const driver_t *driver = known ? known : &settings->fallback;

    buf_t who = {0};
    if (known) {
        add(&who, "driver ");
        add_n(&who, prov, prov_len);
    } else {
        add(&who, "unlisted driver ");
        add_quoted(&who, prov, prov_len);
    }

    // The driver's preferred snapshot class when it exists, else the first there is.
    const str_t *snapshot_class = NULL;
    long k = driver->snapshot_class.set ? find(&in->snapshot_classes, driver->snapshot_class.ptr,
                                               driver->snapshot_class.len)
                                        : -1;
    if (k >= 0) snapshot_class = &in->snapshot_classes.ptr[k];
    else if (in->snapshot_classes.len > 0) snapshot_class = &in->snapshot_classes.ptr[0];
    bool can_snapshot = driver->snapshot && snapshot_class;
    bool can_clone = driver->clone && !in->clone_failure.is_some;
    const char *cannot_clone = in->clone_failure.is_some ? "failed to clone this PVC"
                                                         : "cannot clone";

    method_t wanted = FERROSYNC_POLICY_TYPES_METHOD_DIRECT;
    if (in->requested.is_some) wanted = in->requested.val;
    else if (text_is(&driver->prefer, "clone")) wanted = FERROSYNC_POLICY_TYPES_METHOD_CLONE;
    else if (text_is(&driver->prefer, "snapshot")) wanted = FERROSYNC_POLICY_TYPES_METHOD_SNAPSHOT;

    buf_t why = {0};
    method_t method;
    const char *tail = NULL; // what follows `who` in the reason
    if (wanted == FERROSYNC_POLICY_TYPES_METHOD_DIRECT) {
        method = FERROSYNC_POLICY_TYPES_METHOD_DIRECT;
        add(&why, "Direct: no point-in-time copy");
    } else if (wanted == FERROSYNC_POLICY_TYPES_METHOD_CLONE) {
        if (can_clone) {
            method = FERROSYNC_POLICY_TYPES_METHOD_CLONE;
            add(&why, "Clone: ");
            tail = " clones";
        } else if (can_snapshot) {
            method = FERROSYNC_POLICY_TYPES_METHOD_SNAPSHOT;
            add(&why, "Snapshot instead of Clone: ");
        } else {
            method = FERROSYNC_POLICY_TYPES_METHOD_DIRECT;
            add(&why, "Direct: ");
        }
        if (!tail) {
            add_n(&why, who.ptr, who.len);
            add(&why, " ");
            add(&why, cannot_clone);
            if (method == FERROSYNC_POLICY_TYPES_METHOD_DIRECT) add(&why, " and has no snapshot class");
        }
    } else if (can_snapshot) {
        method = FERROSYNC_POLICY_TYPES_METHOD_SNAPSHOT;
        add(&why, "Snapshot: ");
        tail = " snapshots";
    } else if (can_clone) {
        method = FERROSYNC_POLICY_TYPES_METHOD_CLONE;
        add(&why, "Clone instead of Snapshot: ");
        tail = " has no usable snapshot class";
    } else {
        method = FERROSYNC_POLICY_TYPES_METHOD_DIRECT;
        add(&why, "Direct: ");
        tail = " can neither snapshot nor clone";
    }
    if (tail) {
        add_n(&why, who.ptr, who.len);
        add(&why, tail);
    }
    free(who.ptr);

    *out = (copy_method_copy_method_decision_t){0};
    out->method = method;
    out->reason = to_str(&why);
    if (method == FERROSYNC_POLICY_TYPES_METHOD_SNAPSHOT) {
        out->volume_snapshot_class.is_some = true;
        out->volume_snapshot_class.val = copy_of(snapshot_class->ptr, snapshot_class->len);
    }
    const text_t *pit = &driver->pit_storage_class;
    if (method != FERROSYNC_POLICY_TYPES_METHOD_DIRECT && pit->set &&
        find(&in->storage_classes, pit->ptr, pit->len) >= 0) {
        out->storage_class.is_some = true;
        out->storage_class.val = copy_of(pit->ptr, pit->len);
    }
}

// The export. The input is ours to free; what we return, the bindings free after the host
// has read it.
bool exports_copy_method_decide(copy_method_copy_method_input_t *input,
                                copy_method_copy_method_decision_t *ret, str_t *err) {
    settings_t settings;
    const char *bad = settings_parse(input->settings.ptr, input->settings.len, &settings);
    if (bad) {
        buf_t msg = {0};
        add(&msg, "invalid settings: ");
        add(&msg, bad);
        *err = to_str(&msg);
    } else {
        decide(input, &settings, ret);
        settings_free(&settings);
    }
    copy_method_copy_method_input_free(input);
    return !bad;
}
