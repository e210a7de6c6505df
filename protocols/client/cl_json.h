/*
 * cl_json.h - JSON views of client protocol msgpack, for the CLI tools
 * (print events as JSON lines; let a user type a raw request).
 * Not used by the appliance itself.
 */
#ifndef CL_JSON_H
#define CL_JSON_H

#include <stddef.h>
#include <msgpack.h>

#include "cl_frame.h"

/* Deepest nesting of arrays/objects either direction accepts (msgpack-c
 * decodes at most 32 levels). */
#define CL_JSON_MAX_DEPTH 32

/*
 * Write o as compact JSON text (no whitespace, members in map order).
 * str must be valid UTF-8 and is escaped per RFC 8259 (", \ and control
 * characters as \u00XX; everything else raw UTF-8); integers are exact;
 * floats are written in the shortest form that reads back to the same
 * value; bin becomes a base64 (RFC 4648, padded) string; nil is null.
 * Returns 0 with a NUL-terminated malloc'd *out (the caller frees it) and its
 * length in *len, or -IM_EINVAL (a map key that is not a str, ext, a NaN or
 * infinite float, nesting deeper than 64), -IM_EUTF8 (a str that is not
 * UTF-8), -IM_ETOOBIG (text over IM_BUF_MAX_DEFAULT, 64 MiB) or -ENOMEM; on
 * failure *out is NULL.
 */
int cl_json_write(const msgpack_object *o, char **out, size_t *len);

/*
 * Parse exactly one JSON value (RFC 8259, strict: no comments, no trailing
 * commas, no leading zeros, no bare control characters in strings;
 * whitespace around the value allowed) from [text, text+len) and pack it
 * into e: objects as maps with str keys (a repeated name is an error),
 * arrays, strings as str (\u escapes, surrogate pairs included, as UTF-8;
 * a lone surrogate is an error), integers without fraction or exponent as
 * uint (>= 0) or int (< 0), other numbers as float64, true/false/null.
 * Returns 0, -IM_EINVAL (syntax, depth over CL_JSON_MAX_DEPTH, an integer
 * outside [INT64_MIN, UINT64_MAX], a number out of double range, a
 * duplicate name), -IM_EUTF8 (text not UTF-8) or -ENOMEM.  On failure e is
 * left as it was on entry.
 */
int cl_json_parse(const char *text, size_t len, struct cl_enc *e);

#endif
