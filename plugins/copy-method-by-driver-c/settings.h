// The settings of copy-method-by-driver-c: the same JSON document, with the same rules, as
// its Rust twin's `Settings` (plugins/copy-method-by-driver): a table of drivers by
// provisioner name and the capabilities of a driver missing from it.
#ifndef SETTINGS_H
#define SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// A decoded JSON string, or its absence (a missing field or `null`).
typedef struct {
    bool set;
    uint8_t *ptr;
    size_t len;
} text_t;

typedef struct {
    text_t name; // the provisioner; unset for the default driver
    bool clone;
    bool snapshot;
    text_t prefer;            // "clone", "snapshot" or "direct", when none is requested
    text_t snapshot_class;    // a preferred VolumeSnapshotClass, used when it exists
    text_t pit_storage_class; // a StorageClass for the PiT copy, used when it exists
} driver_t;

typedef struct {
    driver_t *drivers;
    size_t count;
    driver_t fallback; // the `default` field
} settings_t;

// Parses `json` into `out`. Empty (or blank) means all defaults. Returns NULL, or what is
// wrong (a static message); `out` then holds nothing to free.
const char *settings_parse(const uint8_t *json, size_t len, settings_t *out);

// The table's driver for `name` (as in a JSON object, the last entry of a repeated name),
// or NULL.
const driver_t *settings_driver(const settings_t *s, const uint8_t *name, size_t len);

void settings_free(settings_t *s);

#endif
