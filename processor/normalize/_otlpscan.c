/* Reading an OTLP ExportTraceServiceRequest straight from its bytes, for the receiver's hot path.
 *
 * Why: parsing with protobuf (upb) is fast, but reading a span's fields and attributes back out of upb from Python
 * costs several microseconds a span (a wrapper object per access, a C round trip per map lookup): more than every
 * other stage of the receiver together. This module walks the wire format once and hands Python exactly what the
 * normalizer reads: per ResourceSpans, the raw Resource bytes and a list of spans, each with its ids, name, kind,
 * times, status code and a dict of attribute key -> value: decoded here for the common encodings (str, int, bool,
 * float, exactly as otlp.any_value decodes them), else the AnyValue encoding as ``bytes`` (what the upb path gives
 * for every value), decoded on demand by otlp.any_value.
 *
 * Contract: the result is exactly what the upb path reads, or ScanFallback is raised and the caller uses the upb
 * path. Anything this scanner does not take on (invalid UTF-8 anywhere protobuf would check it, groups, a known
 * field with an unexpected wire type, nesting deeper than upb allows, truncation) is a fallback, never a guess, so
 * errors and warnings keep coming from one place. Every string field of the OTLP trace schema is validated as upb
 * validates it, also in the parts the normalizer never reads (events, links, scopes), so the two paths accept and
 * reject the same requests.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

static PyObject *ScanFallback;

/* ---------------------------------------------------------------------------------------------------------------- */
/* UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF), as upb's utf8_range. */

static int valid_utf8(const uint8_t *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n) return 0;
            uint8_t c1 = s[i + 1];
            if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && c1 < 0xA0) return 0; /* overlong */
            if (c == 0xED && c1 > 0x9F) return 0; /* surrogate */
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n) return 0;
            uint8_t c1 = s[i + 1];
            if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80) return 0;
            if (c == 0xF0 && c1 < 0x90) return 0; /* overlong */
            if (c == 0xF4 && c1 > 0x8F) return 0; /* above U+10FFFF */
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Wire format. */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Cursor;

static int fallback(const char *why) {
    PyErr_SetString(ScanFallback, why);
    return -1;
}

static int read_varint(Cursor *c, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (c->p >= c->end) return fallback("truncated varint");
        uint8_t b = *c->p++;
        if (shift == 63 && b > 1) return fallback("varint too long");
        v |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) { *out = v; return 0; }
    }
    return fallback("varint too long");
}

static int read_len(Cursor *c, const uint8_t **start, Py_ssize_t *len) {
    uint64_t n;
    if (read_varint(c, &n) < 0) return -1;
    if (n > (uint64_t)(c->end - c->p)) return fallback("truncated length-delimited field");
    *start = c->p;
    *len = (Py_ssize_t)n;
    c->p += n;
    return 0;
}

static int read_fixed64(Cursor *c, uint64_t *out) {
    if (c->end - c->p < 8) return fallback("truncated fixed64");
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | c->p[i];
    c->p += 8;
    *out = v;
    return 0;
}

static int read_tag(Cursor *c, int *number, int *wire) {
    uint64_t tag;
    if (read_varint(c, &tag) < 0) return -1;
    if ((tag >> 3) == 0 || (tag >> 3) > 536870911) return fallback("invalid field number");
    *number = (int)(tag >> 3);
    *wire = (int)(tag & 7);
    return 0;
}

static int skip_field(Cursor *c, int wire) {
    uint64_t v;
    const uint8_t *s;
    Py_ssize_t n;
    switch (wire) {
    case 0: return read_varint(c, &v);
    case 1: if (c->end - c->p < 8) return fallback("truncated fixed64"); c->p += 8; return 0;
    case 2: return read_len(c, &s, &n);
    case 5: if (c->end - c->p < 4) return fallback("truncated fixed32"); c->p += 4; return 0;
    default: return fallback("group or invalid wire type");
    }
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Validation of the parts Python never reads, table-driven by the OTLP schema. */

enum { K_VARINT, K_I64, K_I32, K_BYTES, K_STRING, K_MSG };

typedef struct Field Field;
typedef struct {
    const Field *fields;
    int count;
} Message;
struct Field {
    int number;
    int kind;
    const Message *message;
};

static const Message ANY_VALUE, KEY_VALUE;
static const Field ARRAY_VALUE_FIELDS[] = {{1, K_MSG, &ANY_VALUE}};
static const Message ARRAY_VALUE = {ARRAY_VALUE_FIELDS, 1};
static const Field KEY_VALUE_LIST_FIELDS[] = {{1, K_MSG, &KEY_VALUE}};
static const Message KEY_VALUE_LIST = {KEY_VALUE_LIST_FIELDS, 1};
static const Field ANY_VALUE_FIELDS[] = {
    {1, K_STRING, NULL}, {2, K_VARINT, NULL}, {3, K_VARINT, NULL}, {4, K_I64, NULL},
    {5, K_MSG, &ARRAY_VALUE}, {6, K_MSG, &KEY_VALUE_LIST}, {7, K_BYTES, NULL}, {8, K_VARINT, NULL}};
static const Message ANY_VALUE = {ANY_VALUE_FIELDS, 8};
static const Field KEY_VALUE_FIELDS[] = {{1, K_STRING, NULL}, {2, K_MSG, &ANY_VALUE}, {3, K_VARINT, NULL}};
static const Message KEY_VALUE = {KEY_VALUE_FIELDS, 3};
static const Field ENTITY_REF_FIELDS[] = {
    {1, K_STRING, NULL}, {2, K_STRING, NULL}, {3, K_STRING, NULL}, {4, K_STRING, NULL}};
static const Message ENTITY_REF = {ENTITY_REF_FIELDS, 4};
static const Field RESOURCE_FIELDS[] = {{1, K_MSG, &KEY_VALUE}, {2, K_VARINT, NULL}, {3, K_MSG, &ENTITY_REF}};
static const Message RESOURCE = {RESOURCE_FIELDS, 3};
static const Field SCOPE_FIELDS[] = {
    {1, K_STRING, NULL}, {2, K_STRING, NULL}, {3, K_MSG, &KEY_VALUE}, {4, K_VARINT, NULL}};
static const Message SCOPE = {SCOPE_FIELDS, 4};
static const Field EVENT_FIELDS[] = {
    {1, K_I64, NULL}, {2, K_STRING, NULL}, {3, K_MSG, &KEY_VALUE}, {4, K_VARINT, NULL}};
static const Message EVENT = {EVENT_FIELDS, 4};
static const Field LINK_FIELDS[] = {
    {1, K_BYTES, NULL}, {2, K_BYTES, NULL}, {3, K_STRING, NULL}, {4, K_MSG, &KEY_VALUE},
    {5, K_VARINT, NULL}, {6, K_I32, NULL}};
static const Message LINK = {LINK_FIELDS, 6};

#define MAX_DEPTH 60 /* upb's limit is 100; deeper than this is not worth a fast path */

static const int WIRE_OF_KIND[] = {0, 1, 5, 2, 2, 2};

static int validate(const uint8_t *s, Py_ssize_t n, const Message *m, int depth) {
    if (depth > MAX_DEPTH) return fallback("nested too deep");
    Cursor c = {s, s + n};
    while (c.p < c.end) {

        int number, wire;
        if (read_tag(&c, &number, &wire) < 0) return -1;
        const Field *f = NULL;
        for (int i = 0; i < m->count; i++) {
            if (m->fields[i].number == number) { f = &m->fields[i]; break; }
        }
        if (f == NULL) {
            if (skip_field(&c, wire) < 0) return -1;
            continue;
        }
        if (WIRE_OF_KIND[f->kind] != wire) return fallback("unexpected wire type");
        if (f->kind == K_STRING || f->kind == K_MSG) {
            const uint8_t *v;
            Py_ssize_t len;
            if (read_len(&c, &v, &len) < 0) return -1;
            if (f->kind == K_STRING) {
                if (!valid_utf8(v, len)) return fallback("invalid UTF-8");
            } else if (validate(v, len, f->message, depth + 1) < 0) {
                return -1;
            }
        } else if (skip_field(&c, wire) < 0) {
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Strings that repeat (attribute keys, span names): decoded once, interned, kept in a small direct-mapped cache. */

#define CACHE_SLOTS 2048 /* per table; a slot is 24 bytes, so a table stays in the L2 cache */
#define CACHE_MAX_LEN 96

typedef struct {
    uint64_t hash;
    Py_ssize_t len;
    PyObject *str; /* an exact str whose UTF-8 form is the key's bytes */
} CacheSlot;

static CacheSlot *cache;

static uint64_t hash_bytes(const uint8_t *s, Py_ssize_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
    }
    uint64_t tail = 0;
    for (Py_ssize_t j = n - 1; j >= i; j--) tail = (tail << 8) | s[j];
    h = (h ^ tail) * 0xC4CEB9FE1A85EC53ULL;
    return h ^ (h >> 29);
}

/* The UTF-8 bytes of a cached str, for the comparison (ASCII strs hold them inline; others cache them). */
static const char *utf8_of(PyObject *str, Py_ssize_t *len) {
    if (PyUnicode_IS_COMPACT_ASCII(str)) {
        *len = PyUnicode_GET_LENGTH(str);
        return (const char *)PyUnicode_DATA(str);
    }
    return PyUnicode_AsUTF8AndSize(str, len);
}

/* A str for UTF-8 bytes ``s`` (NULL, no exception set, when they are not valid UTF-8), from ``table`` when short;
 * ``intern`` for keys and names, which are compared with the normalizer's constants. */
static PyObject *cached_str(CacheSlot *table, const uint8_t *s, Py_ssize_t n, int intern) {
    if (!valid_utf8(s, n)) return NULL;
    if (n > CACHE_MAX_LEN || table == NULL) return PyUnicode_DecodeUTF8((const char *)s, n, NULL);
    uint64_t h = hash_bytes(s, n);
    CacheSlot *slot = &table[h & (CACHE_SLOTS - 1)];
    if (slot->str != NULL && slot->hash == h && slot->len == n) {
        Py_ssize_t len;
        const char *utf8 = utf8_of(slot->str, &len);
        if (utf8 != NULL && len == n && memcmp(utf8, s, (size_t)n) == 0) {
            Py_INCREF(slot->str);
            return slot->str;
        }
        PyErr_Clear();
    }
    PyObject *u = PyUnicode_DecodeUTF8((const char *)s, n, NULL);
    if (u == NULL) return NULL;
    if (intern) PyUnicode_InternInPlace(&u);
    Py_XSETREF(slot->str, u);
    Py_INCREF(u);
    slot->hash = h;
    slot->len = n;
    return u;
}

static PyObject *decode_str(const uint8_t *s, Py_ssize_t n) {
    PyObject *u = cached_str(cache, s, n, 1);
    if (u == NULL && !PyErr_Occurred()) fallback("invalid UTF-8");
    return u;
}

/* Attribute values. The common encodings (one field covering the whole AnyValue: a string, an int, a bool, a
 * double) are decoded here, as otlp._decode_any_value decodes them: no bytes object, no memo lookup. Any other
 * encoding (arrays, kvlists, bytes, several fields, unknown fields, invalid UTF-8) stays its encoding (``bytes``),
 * for otlp.any_value to decode, so every error is still raised from one place. Short strings repeat (names, ids of
 * a plan, flags): they come from a cache, with their hash already computed. */

static CacheSlot *value_cache;

static int varint_at(const uint8_t *s, Py_ssize_t n, Py_ssize_t *pos, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
        if (*pos >= n) return -1;
        uint8_t b = s[(*pos)++];
        if (shift == 63 && b > 1) return -1; /* bits beyond 64: left to Python, which reads them all */
        v |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) { *out = v; return 0; }
    }
    return -1;
}

static PyObject *attribute_value(const uint8_t *s, Py_ssize_t n) {
    Py_ssize_t pos = 1;
    uint64_t v;
    if (n >= 2) {
        switch (s[0]) {
        case 0x0A: /* string_value */
            if (varint_at(s, n, &pos, &v) == 0 && v == (uint64_t)(n - pos)) {
                PyObject *u = cached_str(value_cache, s + pos, n - pos, 0);
                if (u != NULL) return u;
                if (PyErr_Occurred()) return NULL;
            }
            break;
        case 0x18: /* int_value: two's complement int64 */
            if (varint_at(s, n, &pos, &v) == 0 && pos == n) return PyLong_FromLongLong((long long)(int64_t)v);
            break;
        case 0x10: /* bool_value */
            if (varint_at(s, n, &pos, &v) == 0 && pos == n) return PyBool_FromLong(v != 0);
            break;
        case 0x21: /* double_value */
            if (n == 9) {
                double d;
                uint64_t bits = 0;
                for (int i = 8; i >= 1; i--) bits = (bits << 8) | s[i];
                memcpy(&d, &bits, sizeof d);
                return PyFloat_FromDouble(d);
            }
            break;
        }
    }
    return PyBytes_FromStringAndSize((const char *)s, n);
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* The span type: the fields the normalizer reads, under the names upb's Span uses. ``status`` is the span itself,
 * so ``span.status.code`` reads as it does on a protobuf Span. */

typedef struct {
    PyObject_HEAD
    PyObject *name;
    PyObject *trace_id;
    PyObject *span_id;
    PyObject *parent_span_id;
    PyObject *keys;       /* attribute keys in wire order (a repeated key appears each time) */
    PyObject *values;     /* their values, same order */
    PyObject *attributes; /* key -> value, the last of a repeated key winning: built on first use */
    unsigned long long start_time_unix_nano;
    unsigned long long end_time_unix_nano;
    int kind;
    int code;
} ScannedSpan;

static void span_dealloc(ScannedSpan *self) {
    Py_XDECREF(self->name);
    Py_XDECREF(self->trace_id);
    Py_XDECREF(self->span_id);
    Py_XDECREF(self->parent_span_id);
    Py_XDECREF(self->keys);
    Py_XDECREF(self->values);
    Py_XDECREF(self->attributes);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef span_members[] = {
    {"name", T_OBJECT_EX, offsetof(ScannedSpan, name), READONLY, NULL},
    {"trace_id", T_OBJECT_EX, offsetof(ScannedSpan, trace_id), READONLY, NULL},
    {"span_id", T_OBJECT_EX, offsetof(ScannedSpan, span_id), READONLY, NULL},
    {"parent_span_id", T_OBJECT_EX, offsetof(ScannedSpan, parent_span_id), READONLY, NULL},
    {"keys", T_OBJECT_EX, offsetof(ScannedSpan, keys), READONLY, NULL},
    {"values", T_OBJECT_EX, offsetof(ScannedSpan, values), READONLY, NULL},
    {"start_time_unix_nano", T_ULONGLONG, offsetof(ScannedSpan, start_time_unix_nano), READONLY, NULL},
    {"end_time_unix_nano", T_ULONGLONG, offsetof(ScannedSpan, end_time_unix_nano), READONLY, NULL},
    {"kind", T_INT, offsetof(ScannedSpan, kind), READONLY, NULL},
    {"code", T_INT, offsetof(ScannedSpan, code), READONLY, NULL},
    {NULL},
};

static PyObject *span_status(PyObject *self, void *closure) {
    (void)closure;
    Py_INCREF(self);
    return self;
}

/* The dict the general path reads (and may delete from: a value that does not decode is dropped): built once, on
 * first use; the fast path reads ``keys`` and ``values`` and never builds it. */
static PyObject *span_attributes(PyObject *op, void *closure) {
    (void)closure;
    ScannedSpan *self = (ScannedSpan *)op;
    if (self->attributes == NULL) {
        PyObject *d = PyDict_New();
        if (d == NULL) return NULL;
        Py_ssize_t n = PyTuple_GET_SIZE(self->keys);
        for (Py_ssize_t i = 0; i < n; i++) {
            if (PyDict_SetItem(d, PyTuple_GET_ITEM(self->keys, i), PyTuple_GET_ITEM(self->values, i)) < 0) {
                Py_DECREF(d);
                return NULL;
            }
        }
        self->attributes = d;
    }
    Py_INCREF(self->attributes);
    return self->attributes;
}

static PyGetSetDef span_getset[] = {
    {"status", span_status, NULL, NULL, NULL},
    {"attributes", span_attributes, NULL, NULL, NULL},
    {NULL},
};

static PyObject *span_repr(ScannedSpan *self) {
    return PyUnicode_FromFormat("ScannedSpan(name=%R, attributes=%zd)", self->name, PyTuple_GET_SIZE(self->keys));
}

static PyTypeObject ScannedSpanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tokentrail.processor._otlpscan.ScannedSpan",
    .tp_basicsize = sizeof(ScannedSpan),
    .tp_dealloc = (destructor)span_dealloc,
    .tp_repr = (reprfunc)span_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One span as the normalizer reads it (see _otlpscan.c).",
    .tp_members = span_members,
    .tp_getset = span_getset,
};

/* ---------------------------------------------------------------------------------------------------------------- */
/* The parts Python reads. */

static PyObject *EMPTY_BYTES, *EMPTY_STR;

static int set_bytes(PyObject **slot, const uint8_t *s, Py_ssize_t n) {
    PyObject *b = n ? PyBytes_FromStringAndSize((const char *)s, n) : (Py_INCREF(EMPTY_BYTES), EMPTY_BYTES);
    if (b == NULL) return -1;
    Py_XSETREF(*slot, b);
    return 0;
}

/* A span's attributes as they are read: keys and values, alternating (new references), then two tuples. */
typedef struct {
    PyObject **items;
    Py_ssize_t len, cap;
    PyObject *inline_items[64];
} Pairs;

static void pairs_init(Pairs *p) {
    p->items = p->inline_items;
    p->len = 0;
    p->cap = 64;
}

static void pairs_clear(Pairs *p) {
    for (Py_ssize_t i = 0; i < p->len; i++) Py_DECREF(p->items[i]);
    if (p->items != p->inline_items) PyMem_Free(p->items);
    pairs_init(p);
}

static int pairs_add(Pairs *p, PyObject *key, PyObject *value) { /* steals both */
    if (p->len + 2 > p->cap) {
        Py_ssize_t cap = p->cap * 2;
        PyObject **items = PyMem_Malloc((size_t)cap * sizeof(PyObject *));
        if (items == NULL) {
            Py_DECREF(key);
            Py_DECREF(value);
            PyErr_NoMemory();
            return -1;
        }
        memcpy(items, p->items, (size_t)p->len * sizeof(PyObject *));
        if (p->items != p->inline_items) PyMem_Free(p->items);
        p->items = items;
        p->cap = cap;
    }
    p->items[p->len++] = key;
    p->items[p->len++] = value;
    return 0;
}

/* Moves the pairs into ``keys`` and ``values`` tuples; ``p`` is empty afterwards. */
static int pairs_finish(Pairs *p, PyObject **keys, PyObject **values) {
    Py_ssize_t n = p->len / 2;
    PyObject *k = PyTuple_New(n), *v = PyTuple_New(n);
    if (k == NULL || v == NULL) {
        Py_XDECREF(k);
        Py_XDECREF(v);
        pairs_clear(p);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(k, i, p->items[2 * i]);
        PyTuple_SET_ITEM(v, i, p->items[2 * i + 1]);
    }
    p->len = 0;
    pairs_clear(p);
    /* Strs, ints, floats and bytes cannot form a cycle: the collector need not track these (it would find out
     * itself, one collection later, after walking them). */
    PyObject_GC_UnTrack(k);
    PyObject_GC_UnTrack(v);
    Py_XSETREF(*keys, k);
    Py_XSETREF(*values, v);
    return 0;
}

/* One attribute (a KeyValue read as a map entry: key = 1, value = 2). */
static int read_attribute(const uint8_t *s, Py_ssize_t n, Pairs *attributes) {
    Cursor c = {s, s + n};
    const uint8_t *key = NULL, *value = NULL;
    Py_ssize_t key_len = 0, value_len = 0;
    while (c.p < c.end) {

        int number, wire;
        if (read_tag(&c, &number, &wire) < 0) return -1;
        if (number == 1 || number == 2) {
            if (wire != 2) return fallback("unexpected wire type");
            if (number == 1) {
                if (read_len(&c, &key, &key_len) < 0) return -1;
            } else if (read_len(&c, &value, &value_len) < 0) {
                return -1;
            }
        } else {
            /* protobuf keeps a map entry with an unknown field (e.g. KeyValue.key_strindex) out of the map, as an
             * unknown field of the span: too rare to mirror, so protobuf decides. */
            return fallback("unknown field in an attribute");
        }
    }
    PyObject *k = key_len ? decode_str(key, key_len) : (Py_INCREF(EMPTY_STR), EMPTY_STR);
    if (k == NULL) return -1;
    PyObject *v = value_len ? attribute_value(value, value_len) : (Py_INCREF(EMPTY_BYTES), EMPTY_BYTES);
    if (v == NULL) {
        Py_DECREF(k);
        return -1;
    }
    return pairs_add(attributes, k, v);
}

static int read_status(const uint8_t *s, Py_ssize_t n, int *code) {
    Cursor c = {s, s + n};
    while (c.p < c.end) {
        uint64_t v;
        int number, wire;
        if (read_tag(&c, &number, &wire) < 0) return -1;
        if (number == 3) {
            if (wire != 0) return fallback("unexpected wire type");
            if (read_varint(&c, &v) < 0) return -1;
            *code = (int)(int32_t)(uint32_t)v; /* an enum is an int32 on the wire */
        } else if (number == 2) {
            const uint8_t *m;
            Py_ssize_t len;
            if (wire != 2) return fallback("unexpected wire type");
            if (read_len(&c, &m, &len) < 0) return -1;
            if (!valid_utf8(m, len)) return fallback("invalid UTF-8");
        } else if (skip_field(&c, wire) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyObject *read_span(const uint8_t *s, Py_ssize_t n) {
    ScannedSpan *span = PyObject_New(ScannedSpan, &ScannedSpanType);
    if (span == NULL) return NULL;
    Py_INCREF(EMPTY_STR);
    span->name = EMPTY_STR;
    Py_INCREF(EMPTY_BYTES);
    span->trace_id = EMPTY_BYTES;
    Py_INCREF(EMPTY_BYTES);
    span->span_id = EMPTY_BYTES;
    Py_INCREF(EMPTY_BYTES);
    span->parent_span_id = EMPTY_BYTES;
    span->keys = span->values = span->attributes = NULL;
    span->start_time_unix_nano = span->end_time_unix_nano = 0;
    span->kind = span->code = 0;
    Pairs attributes;
    pairs_init(&attributes);

    Cursor c = {s, s + n};
    while (c.p < c.end) {
        uint64_t v;
        const uint8_t *f;
        Py_ssize_t len;
        int number, wire;
        if (read_tag(&c, &number, &wire) < 0) goto error;
        switch (number) {
        case 1: case 2: case 4: case 3: case 5: case 9: case 11: case 13: case 15:
            if (wire != 2) { fallback("unexpected wire type"); goto error; }
            if (read_len(&c, &f, &len) < 0) goto error;
            if (number == 1) { if (set_bytes(&span->trace_id, f, len) < 0) goto error; }
            else if (number == 2) { if (set_bytes(&span->span_id, f, len) < 0) goto error; }
            else if (number == 4) { if (set_bytes(&span->parent_span_id, f, len) < 0) goto error; }
            else if (number == 3) { if (!valid_utf8(f, len)) { fallback("invalid UTF-8"); goto error; } }
            else if (number == 5) {
                PyObject *name = len ? decode_str(f, len) : (Py_INCREF(EMPTY_STR), EMPTY_STR);
                if (name == NULL) goto error;
                Py_SETREF(span->name, name);
            }
            else if (number == 9) { if (read_attribute(f, len, &attributes) < 0) goto error; }
            else if (number == 11) { if (validate(f, len, &EVENT, 1) < 0) goto error; }
            else if (number == 13) { if (validate(f, len, &LINK, 1) < 0) goto error; }
            else { if (read_status(f, len, &span->code) < 0) goto error; }
            break;
        case 6:
            if (wire != 0) { fallback("unexpected wire type"); goto error; }
            if (read_varint(&c, &v) < 0) goto error;
            span->kind = (int)(int32_t)(uint32_t)v;
            break;
        case 7: case 8:
            if (wire != 1) { fallback("unexpected wire type"); goto error; }
            if (read_fixed64(&c, &v) < 0) goto error;
            if (number == 7) span->start_time_unix_nano = v; else span->end_time_unix_nano = v;
            break;
        case 10: case 12: case 14:
            if (wire != 0) { fallback("unexpected wire type"); goto error; }
            if (read_varint(&c, &v) < 0) goto error;
            break;
        case 16:
            if (wire != 5) { fallback("unexpected wire type"); goto error; }
            if (skip_field(&c, wire) < 0) goto error;
            break;
        default:
            if (skip_field(&c, wire) < 0) goto error;
        }
    }
    if (pairs_finish(&attributes, &span->keys, &span->values) < 0) goto error;
    return (PyObject *)span;
error:
    pairs_clear(&attributes);
    Py_DECREF(span);
    return NULL;
}

static int read_scope_spans(const uint8_t *s, Py_ssize_t n, PyObject *spans) {
    Cursor c = {s, s + n};
    while (c.p < c.end) {

        const uint8_t *f;
        Py_ssize_t len;
        int number, wire;
        if (read_tag(&c, &number, &wire) < 0) return -1;
        if (number >= 1 && number <= 3) {
            if (wire != 2) return fallback("unexpected wire type");
            if (read_len(&c, &f, &len) < 0) return -1;
            if (number == 1) {
                if (validate(f, len, &SCOPE, 1) < 0) return -1;
            } else if (number == 3) {
                if (!valid_utf8(f, len)) return fallback("invalid UTF-8");
            } else {
                PyObject *span = read_span(f, len);
                if (span == NULL) return -1;
                int rc = PyList_Append(spans, span);
                Py_DECREF(span);
                if (rc < 0) return -1;
            }
        } else if (skip_field(&c, wire) < 0) {
            return -1;
        }
    }
    return 0;
}

/* One ResourceSpans: (Resource encoding or None, [spans of every ScopeSpans, in order]). Repeated ``resource``
 * fields merge in protobuf: their encodings are concatenated, which parses to the same merge. */
static PyObject *read_resource_spans(const uint8_t *s, Py_ssize_t n) {
    PyObject *spans = PyList_New(0), *resource = NULL, *out = NULL;
    if (spans == NULL) return NULL;
    Cursor c = {s, s + n};
    while (c.p < c.end) {

        const uint8_t *f;
        Py_ssize_t len;
        int number, wire;
        if (read_tag(&c, &number, &wire) < 0) goto done;
        if (number >= 1 && number <= 3) {
            if (wire != 2) { fallback("unexpected wire type"); goto done; }
            if (read_len(&c, &f, &len) < 0) goto done;
            if (number == 1) {
                if (validate(f, len, &RESOURCE, 1) < 0) goto done;
                if (resource == NULL) {
                    resource = PyBytes_FromStringAndSize((const char *)f, len);
                    if (resource == NULL) goto done;
                } else {
                    PyObject *more = PyBytes_FromStringAndSize((const char *)f, len);
                    if (more == NULL) goto done;
                    PyBytes_ConcatAndDel(&resource, more);
                    if (resource == NULL) goto done;
                }
            } else if (number == 3) {
                if (!valid_utf8(f, len)) { fallback("invalid UTF-8"); goto done; }
            } else if (read_scope_spans(f, len, spans) < 0) {
                goto done;
            }
        } else if (skip_field(&c, wire) < 0) {
            goto done;
        }
    }
    out = PyTuple_Pack(2, resource != NULL ? resource : Py_None, spans);
done:
    Py_XDECREF(resource);
    Py_DECREF(spans);
    return out;
}

static PyObject *scan(PyObject *module, PyObject *arg) {
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL) goto done;
    Cursor c = {(const uint8_t *)view.buf, (const uint8_t *)view.buf + view.len};
    while (c.p < c.end) {

        const uint8_t *f;
        Py_ssize_t len;
        int number, wire;
        if (read_tag(&c, &number, &wire) < 0) goto fail;
        if (number == 1) {
            if (wire != 2) { fallback("unexpected wire type"); goto fail; }
            if (read_len(&c, &f, &len) < 0) goto fail;
            PyObject *rs = read_resource_spans(f, len);
            if (rs == NULL) goto fail;
            int rc = PyList_Append(out, rs);
            Py_DECREF(rs);
            if (rc < 0) goto fail;
        } else if (skip_field(&c, wire) < 0) {
            goto fail;
        }
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_O,
     "scan(data) -> [(resource encoding or None, [ScannedSpan, ...]), ...] for one serialized "
     "ExportTraceServiceRequest; raises ScanFallback for anything the protobuf path must decide."},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_otlpscan", "OTLP trace requests read straight from their bytes (see _otlpscan.c).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__otlpscan(void) {
    if (PyType_Ready(&ScannedSpanType) < 0) return NULL;
    cache = PyMem_Calloc(CACHE_SLOTS, sizeof(CacheSlot));
    value_cache = PyMem_Calloc(CACHE_SLOTS, sizeof(CacheSlot));
    if (cache == NULL || value_cache == NULL) return PyErr_NoMemory();
    EMPTY_BYTES = PyBytes_FromStringAndSize("", 0);
    EMPTY_STR = PyUnicode_FromStringAndSize("", 0);
    if (EMPTY_BYTES == NULL || EMPTY_STR == NULL) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    ScanFallback = PyErr_NewExceptionWithDoc(
        "tokentrail.processor._otlpscan.ScanFallback",
        "The request needs the protobuf path (malformed, invalid UTF-8, or a construct this scanner leaves to it).",
        PyExc_ValueError, NULL);
    if (ScanFallback == NULL) return NULL;
    Py_INCREF(ScanFallback);
    if (PyModule_AddObject(m, "ScanFallback", ScanFallback) < 0) return NULL;
    Py_INCREF(&ScannedSpanType);
    if (PyModule_AddObject(m, "ScannedSpan", (PyObject *)&ScannedSpanType) < 0) return NULL;
    return m;
}
