/* The few fields of an LLM request or response body, without decoding the rest of it.
 *
 * Why: the instrumentation reads a handful of small top-level fields of every body (a request's model, stream,
 * user; a response's id, model, finish reasons, usage), and ``json.loads`` builds a Python object for everything
 * else on the way: every message of a chat history, every float of an embedding. That grows with the prompt (a
 * 22 KB chat request takes ~29 µs, more than a span) while the fields we want stay the same size.
 *
 * ``pick(data, spec)`` walks the JSON text once. It VALIDATES all of it exactly as ``json.loads`` would (strict
 * strings, Python's NaN/Infinity literals, numbers, nesting, whitespace, nothing after the value), but BUILDS only
 * what ``spec`` asks for. ``spec`` maps a key to None (decode that key's value whole) or to a nested spec (an
 * object value is picked by it again; an array value becomes a list of its elements, each picked the same way;
 * anything else is decoded whole). The result equals ``project(json.loads(data), spec)`` (see ``_jsonbody``).
 *
 * Contract: the same result as json, or None when this walk cannot vouch for it; the caller then decodes with
 * json, which gives the same value or raises the same error as before. None is returned for anything invalid and
 * for the rare valid inputs kept out of this code: UTF-8-encoded surrogates (which the caller's "surrogatepass"
 * accepts), integers of over 640 digits (Python's int() limit may be set that low), and nesting deeper than
 * MAX_DEPTH or than the interpreter's recursion limit leaves room for.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 200
/* Python refuses int() of more digits than sys.get_int_max_str_digits(), which can be set as low as 640 (the
 * threshold below which it is never checked): longer integers are left to json, which applies the limit in force. */
#define MAX_INT_DIGITS 640

/* Outcomes of every step: OK, NOPE (not vouched for: no Python error set), ERROR (a Python error is set). */
#define OK 0
#define NOPE 1
#define ERROR 2

typedef struct {
    const unsigned char *p, *end;
    int depth;
} Scan;

static inline void skip_ws(Scan *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) s->p++;
}

/* Length of a valid UTF-8 sequence at p (2-4), or 0: invalid, overlong, beyond U+10FFFF, or an encoded surrogate. */
static inline int utf8_sequence(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    Py_ssize_t left = end - p;
    if (c >= 0xC2 && c <= 0xDF) {
        return (left >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0;  /* overlong */
        if (c == 0xED && p[1] >= 0xA0) return 0; /* surrogate: left to json (see the contract) */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0; /* overlong */
        if (c == 0xF4 && p[1] >= 0x90) return 0; /* beyond U+10FFFF */
        return 4;
    }
    return 0;
}

static inline int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static inline int hex4(const unsigned char *p) {
    int a = hex_value(p[0]), b = hex_value(p[1]), c = hex_value(p[2]), d = hex_value(p[3]);
    if ((a | b | c | d) < 0) return -1;
    return (a << 12) | (b << 8) | (c << 4) | d;
}

/* Eight bytes at a time: a byte that is '"', '\\', a control character or non-ASCII stops the fast run. The mask
 * has the high bit of such bytes set; the borrows of the subtractions can only mark bytes ABOVE a real one, so on a
 * little-endian machine its lowest set bit is exactly the first special byte (FIRST_SPECIAL jumps there). */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static inline uint64_t special_bytes(uint64_t w) {
    uint64_t quote = w ^ (ONES * '"');
    uint64_t backslash = w ^ (ONES * '\\');
    uint64_t special = ((quote - ONES) & ~quote) | ((backslash - ONES) & ~backslash) | ((w - ONES * 0x20) & ~w) | w;
    return special & HIGHS;
}
#if (defined(__GNUC__) || defined(__clang__)) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define FIRST_SPECIAL(mask) (__builtin_ctzll(mask) >> 3)
#else
#define FIRST_SPECIAL(mask) 0 /* the byte loop finds it */
#endif

/* Walks a string at s->p (its opening quote) to just after its closing quote. Sets *escaped when it has escapes
 * and *ascii to whether all of it is ASCII. Plain ASCII goes eight bytes at a time, straight to the first special
 * byte, and back to words after a simple escape (a newline in prose); text in another script or dense with \u
 * escapes goes byte by byte, back to words after a run of 16 plain bytes (a word test that fails at every
 * character would only add to it). */
static int walk_string(Scan *s, int *escaped, int *ascii) {
    const unsigned char *p = s->p + 1, *end = s->end;
    *escaped = 0;
    *ascii = 1;
    int run = 16;
    for (;;) {
        if (run >= 16) {
            while (end - p >= 8) {
                uint64_t w;
                memcpy(&w, p, 8);
                uint64_t mask = special_bytes(w);
                if (mask != 0) {
                    p += FIRST_SPECIAL(mask);
                    break;
                }
                p += 8;
            }
            run = 0;
        }
        if (p >= end) return NOPE;
        unsigned char c = *p;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            p++;
            run++;
            continue;
        }
        run = 0;
        if (c == '"') {
            s->p = p + 1;
            return OK;
        }
        if (c == '\\') {
            *escaped = 1;
            if (end - p < 2) return NOPE;
            switch (p[1]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                p += 2;
                run = 16; /* back to words */
                break;
            case 'u':
                if (end - p < 6 || hex4(p + 2) < 0) return NOPE;
                p += 6;
                break;
            default:
                return NOPE;
            }
        } else if (c < 0x20) {
            return NOPE; /* strict json: no control characters in strings */
        } else {
            int n = utf8_sequence(p, end);
            if (n == 0) return NOPE;
            *ascii = 0;
            p += n;
        }
    }
}

/* Short ASCII strings (keys above all: "usage", "prompt_tokens", ... in every body; also "stop", a model's name)
 * come from a small direct-mapped cache of str objects, found by their bytes: no allocation, and a str whose hash
 * is already known for the spec lookup. A slot that holds other bytes is simply replaced. */
#define CACHE_SLOTS 512
#define CACHE_MAX 32
typedef struct {
    PyObject *str;
    Py_ssize_t size;
    unsigned char bytes[CACHE_MAX];
} CacheSlot;
static CacheSlot cache[CACHE_SLOTS];

static PyObject *ascii_str(const unsigned char *start, Py_ssize_t size) {
    PyObject *out = PyUnicode_New(size, 127);
    if (out != NULL) memcpy(PyUnicode_DATA(out), start, (size_t)size);
    return out;
}

static PyObject *short_ascii(const unsigned char *start, Py_ssize_t size) {
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < size; i++) h = (h ^ start[i]) * 16777619u;
    CacheSlot *slot = &cache[(h ^ (h >> 15)) & (CACHE_SLOTS - 1)];
    if (slot->str != NULL && slot->size == size && memcmp(slot->bytes, start, (size_t)size) == 0) {
        return Py_NewRef(slot->str);
    }
    PyObject *out = ascii_str(start, size);
    if (out == NULL) return NULL;
    Py_XSETREF(slot->str, Py_NewRef(out));
    slot->size = size;
    memcpy(slot->bytes, start, (size_t)size);
    return out;
}

/* The str of the string between start (after the opening quote) and stop (its closing quote), escapes decoded as
 * json does: \uXXXX pairs of a high and a low surrogate combine, lone surrogates stay as they are. */
static PyObject *string_value(const unsigned char *start, const unsigned char *stop, int escaped, int ascii) {
    Py_ssize_t size = stop - start;
    if (!escaped) {
        if (ascii) {
            return size <= CACHE_MAX ? short_ascii(start, size) : ascii_str(start, size);
        }
        return PyUnicode_DecodeUTF8((const char *)start, size, "strict");
    }
    Py_UCS4 *buf = PyMem_Malloc(sizeof(Py_UCS4) * (size_t)(size ? size : 1));
    if (buf == NULL) return PyErr_NoMemory();
    Py_ssize_t n = 0;
    const unsigned char *p = start;
    while (p < stop) {
        unsigned char c = *p;
        if (c == '\\') {
            unsigned char e = p[1];
            p += 2;
            switch (e) {
            case '"': buf[n++] = '"'; break;
            case '\\': buf[n++] = '\\'; break;
            case '/': buf[n++] = '/'; break;
            case 'b': buf[n++] = '\b'; break;
            case 'f': buf[n++] = '\f'; break;
            case 'n': buf[n++] = '\n'; break;
            case 'r': buf[n++] = '\r'; break;
            case 't': buf[n++] = '\t'; break;
            default: { /* 'u', checked by walk_string */
                Py_UCS4 u = (Py_UCS4)hex4(p);
                p += 4;
                if (u >= 0xD800 && u <= 0xDBFF && stop - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                    int low = hex4(p + 2);
                    if (low >= 0xDC00 && low <= 0xDFFF) {
                        u = 0x10000 + (((u - 0xD800) << 10) | ((Py_UCS4)low - 0xDC00));
                        p += 6;
                    }
                }
                buf[n++] = u;
            }
            }
        } else if (c < 0x80) {
            buf[n++] = c;
            p++;
        } else if (c < 0xE0) {
            buf[n++] = ((Py_UCS4)(c & 0x1F) << 6) | (p[1] & 0x3F);
            p += 2;
        } else if (c < 0xF0) {
            buf[n++] = ((Py_UCS4)(c & 0x0F) << 12) | ((Py_UCS4)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
            p += 3;
        } else {
            buf[n++] = ((Py_UCS4)(c & 0x07) << 18) | ((Py_UCS4)(p[1] & 0x3F) << 12) | ((Py_UCS4)(p[2] & 0x3F) << 6) |
                       (p[3] & 0x3F);
            p += 4;
        }
    }
    PyObject *out = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, buf, n);
    PyMem_Free(buf);
    return out;
}

static int string(Scan *s, PyObject **out) {
    const unsigned char *start = s->p + 1;
    int escaped, ascii;
    int r = walk_string(s, &escaped, &ascii);
    if (r != OK || out == NULL) return r;
    *out = string_value(start, s->p - 1, escaped, ascii);
    return *out == NULL ? ERROR : OK;
}

static inline int is_digit(const unsigned char *p, const unsigned char *end) {
    return p < end && *p >= '0' && *p <= '9';
}

/* A number as json's NUMBER_RE reads it: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?, or -Infinity. */
static int number(Scan *s, PyObject **out) {
    const unsigned char *p = s->p, *end = s->end, *start = s->p;
    if (*p == '-') {
        p++;
        if (end - p >= 8 && memcmp(p, "Infinity", 8) == 0) {
            s->p = p + 8;
            if (out != NULL && (*out = PyFloat_FromDouble(-INFINITY)) == NULL) return ERROR;
            return OK;
        }
    }
    if (!is_digit(p, end)) return NOPE;
    if (*p == '0') {
        p++;
    } else {
        while (is_digit(p, end)) p++;
    }
    int is_float = 0;
    if (p < end && *p == '.' && is_digit(p + 1, end)) {
        is_float = 1;
        p++;
        while (is_digit(p, end)) p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        const unsigned char *q = p + 1;
        if (q < end && (*q == '+' || *q == '-')) q++;
        if (is_digit(q, end)) {
            is_float = 1;
            p = q;
            while (is_digit(p, end)) p++;
        }
        /* else json's regex stops before the 'e', and what follows is an error of the enclosing value */
    }
    s->p = p;
    Py_ssize_t size = p - start;
    if (!is_float && size > MAX_INT_DIGITS) return NOPE;
    if (out == NULL) return OK;
    if (!is_float && size <= 18) {
        long long value = 0;
        const unsigned char *q = start + (*start == '-');
        for (; q < p; q++) value = value * 10 + (*q - '0');
        *out = PyLong_FromLongLong(*start == '-' ? -value : value);
        return *out == NULL ? ERROR : OK;
    }
    char small[64];
    char *text = size < (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc((size_t)size + 1);
    if (text == NULL) {
        PyErr_NoMemory();
        return ERROR;
    }
    memcpy(text, start, (size_t)size);
    text[size] = '\0';
    if (is_float) {
        double value = PyOS_string_to_double(text, NULL, NULL);
        *out = (value == -1.0 && PyErr_Occurred()) ? NULL : PyFloat_FromDouble(value);
    } else {
        *out = PyLong_FromString(text, NULL, 10);
    }
    if (text != small) PyMem_Free(text);
    return *out == NULL ? ERROR : OK;
}

static int literal(Scan *s, const char *word, Py_ssize_t size, PyObject *value, PyObject **out) {
    if (s->end - s->p < size || memcmp(s->p, word, (size_t)size) != 0) return NOPE;
    s->p += size;
    if (out != NULL) *out = Py_NewRef(value);
    return OK;
}

static int value(Scan *s, PyObject *spec, PyObject **out);

/* One member of an object at s->p (its key's opening quote), into dict (NULL: walked only), picked by spec. */
static int member(Scan *s, PyObject *spec, PyObject *dict) {
    if (s->p >= s->end || *s->p != '"') return NOPE;
    PyObject *key = NULL;
    int r = string(s, dict != NULL ? &key : NULL);
    if (r != OK) return r;
    skip_ws(s);
    if (s->p >= s->end || *s->p != ':') {
        Py_XDECREF(key);
        return NOPE;
    }
    s->p++;
    skip_ws(s);
    PyObject *item_spec = NULL;
    int wanted = dict != NULL;
    if (wanted && spec != NULL) {
        item_spec = PyDict_GetItemWithError(spec, key);
        if (item_spec == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(key);
                return ERROR;
            }
            wanted = 0;
        } else if (!PyDict_Check(item_spec)) {
            item_spec = NULL; /* None (or anything but a nested spec): the value whole */
        }
    }
    PyObject *item = NULL;
    r = value(s, item_spec, wanted ? &item : NULL);
    if (r == OK && wanted) {
        /* Later duplicates win, in the first one's place: as json's dict building does. */
        if (PyDict_SetItem(dict, key, item) < 0) r = ERROR;
        Py_DECREF(item);
    }
    Py_XDECREF(key);
    return r;
}

/* One element of an array at s->p, appended to list (NULL: walked only), picked by spec. */
static int element(Scan *s, PyObject *spec, PyObject *list) {
    PyObject *item = NULL;
    int r = value(s, spec, list != NULL ? &item : NULL);
    if (r != OK || list == NULL) return r;
    r = PyList_Append(list, item) < 0 ? ERROR : OK;
    Py_DECREF(item);
    return r;
}

/* An object or an array at s->p (its opening bracket), its items read by `item` until `close`. With out NULL:
 * walked only. With spec NULL: decoded whole. Else: an object keeps only spec's keys, each value picked by spec's
 * entry for it; an array's elements are picked by spec. */
static int container(Scan *s, PyObject *spec, PyObject **out, unsigned char close,
                     int (*item)(Scan *, PyObject *, PyObject *)) {
    /* json's scanner counts each nesting against the interpreter's recursion limit (RecursionError): so does this,
     * so that a call from deep in the stack is refused alike (left to json). */
    if (Py_EnterRecursiveCall(" while walking a JSON body")) {
        PyErr_Clear();
        return NOPE;
    }
    PyObject *made = NULL;
    if (out != NULL && (made = close == '}' ? PyDict_New() : PyList_New(0)) == NULL) {
        Py_LeaveRecursiveCall();
        return ERROR;
    }
    int r = NOPE;
    if (++s->depth <= MAX_DEPTH) {
        s->p++;
        skip_ws(s);
        if (s->p < s->end && *s->p == close) {
            s->p++;
            r = OK;
        } else {
            for (;;) {
                r = item(s, spec, made);
                if (r != OK) break;
                skip_ws(s);
                if (s->p < s->end && *s->p == ',') {
                    s->p++;
                    skip_ws(s);
                    continue;
                }
                if (s->p < s->end && *s->p == close) {
                    s->p++;
                } else {
                    r = NOPE;
                }
                break;
            }
        }
    }
    s->depth--;
    Py_LeaveRecursiveCall();
    if (r == OK && out != NULL) {
        *out = made;
    } else {
        Py_XDECREF(made);
    }
    return r;
}

static int value(Scan *s, PyObject *spec, PyObject **out) {
    if (s->p >= s->end) return NOPE;
    switch (*s->p) {
    case '{': return container(s, spec, out, '}', member);
    case '[': return container(s, spec, out, ']', element);
    case '"': return string(s, out);
    case 'n': return literal(s, "null", 4, Py_None, out);
    case 't': return literal(s, "true", 4, Py_True, out);
    case 'f': return literal(s, "false", 5, Py_False, out);
    case 'N': {
        if (s->end - s->p < 3 || memcmp(s->p, "NaN", 3) != 0) return NOPE;
        s->p += 3;
        if (out != NULL && (*out = PyFloat_FromDouble(NAN)) == NULL) return ERROR;
        return OK;
    }
    case 'I': {
        if (s->end - s->p < 8 || memcmp(s->p, "Infinity", 8) != 0) return NOPE;
        s->p += 8;
        if (out != NULL && (*out = PyFloat_FromDouble(INFINITY)) == NULL) return ERROR;
        return OK;
    }
    default: return number(s, out);
    }
}

static PyObject *pick(PyObject *module, PyObject *args) {
    Py_buffer data;
    PyObject *spec;
    if (!PyArg_ParseTuple(args, "y*O!:pick", &data, &PyDict_Type, &spec)) return NULL;
    Scan s = {(const unsigned char *)data.buf, (const unsigned char *)data.buf + data.len, 0};
    PyObject *out = NULL;
    int r = NOPE;
    if (s.p < s.end && *s.p == '{') {
        r = container(&s, spec, &out, '}', member);
        if (r == OK) {
            skip_ws(&s);
            if (s.p != s.end) { /* json's "Extra data" */
                Py_CLEAR(out);
                r = NOPE;
            }
        }
    }
    PyBuffer_Release(&data);
    if (r == ERROR) return NULL;
    if (r == NOPE) Py_RETURN_NONE;
    return out;
}

static PyMethodDef methods[] = {
    {"pick", pick, METH_VARARGS,
     "pick(data, spec) -> dict | None: the fields of the JSON object in data that spec asks for (see _jsonpick.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_jsonpick", "The few fields of an LLM request or response body (see _jsonpick.c).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__jsonpick(void) { return PyModule_Create(&module_def); }
