/* Arrow buffers for the receiver's columns, straight from Python sequences.
 *
 * Why: ``pyarrow.array`` converts a Python list element by element through a general converter (scalar checks, type
 * inference hooks): ~35 ns an element, ~1.3 µs a record over the usage schema's columns, the largest cost of an
 * Export after normalizing. The columns here have one exact type each (str or None, int or None, float or None, a
 * list of str), so their Arrow buffers (validity bitmap, offsets, data) are written in one pass; ``schema.py``
 * wraps them with ``pyarrow.Array.from_buffers``. Any element of another type raises TypeError and the caller
 * converts that column with ``pyarrow.array`` as before, so odd input keeps its old behaviour and errors.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Buffer;

static int buffer_reserve(Buffer *b, Py_ssize_t more) {
    if (b->len + more <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more) cap *= 2;
    char *buf = PyMem_Realloc(b->buf, (size_t)cap);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->buf = buf;
    b->cap = cap;
    return 0;
}

static PyObject *buffer_bytes(Buffer *b) {
    PyObject *out = PyBytes_FromStringAndSize(b->buf, b->len);
    PyMem_Free(b->buf);
    b->buf = NULL;
    b->len = b->cap = 0;
    return out;
}

/* A validity bitmap (bit i set: element i is not null), or None when nothing is null. */
static PyObject *validity_of(PyObject **items, Py_ssize_t n, Py_ssize_t nulls) {
    if (nulls == 0) Py_RETURN_NONE;
    PyObject *bitmap = PyBytes_FromStringAndSize(NULL, (n + 7) / 8);
    if (bitmap == NULL) return NULL;
    uint8_t *bits = (uint8_t *)PyBytes_AS_STRING(bitmap);
    memset(bits, 0, (size_t)(n + 7) / 8);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (items[i] != Py_None) bits[i >> 3] |= (uint8_t)(1u << (i & 7));
    }
    return bitmap;
}

static int append_utf8(Buffer *data, PyObject *str) {
    Py_ssize_t len;
    const char *utf8;
    if (PyUnicode_IS_COMPACT_ASCII(str)) {
        len = PyUnicode_GET_LENGTH(str);
        utf8 = (const char *)PyUnicode_DATA(str);
    } else {
        utf8 = PyUnicode_AsUTF8AndSize(str, &len); /* fails for lone surrogates, as pyarrow does */
        if (utf8 == NULL) return -1;
    }
    if (buffer_reserve(data, len) < 0) return -1;
    memcpy(data->buf + data->len, utf8, (size_t)len);
    data->len += len;
    return 0;
}

static PyObject *type_error(const char *what, PyObject *item) {
    PyErr_Format(PyExc_TypeError, "%s column holds a %.100s", what, Py_TYPE(item)->tp_name);
    return NULL;
}

/* pack_strings(seq) -> (validity or None, int32 offsets, UTF-8 data, null count) */
static PyObject *pack_strings(PyObject *module, PyObject *arg) {
    (void)module;
    PyObject *seq = PySequence_Fast(arg, "pack_strings needs a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), nulls = 0;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *offsets = PyBytes_FromStringAndSize(NULL, (n + 1) * 4), *out = NULL, *validity = NULL, *bytes = NULL;
    Buffer data = {NULL, 0, 0};
    if (offsets == NULL) goto done;
    int32_t *off = (int32_t *)PyBytes_AS_STRING(offsets);
    off[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = items[i];
        if (item == Py_None) {
            nulls++;
        } else if (PyUnicode_CheckExact(item)) {
            if (append_utf8(&data, item) < 0) goto done;
            if (data.len > INT32_MAX) {
                PyErr_SetString(PyExc_OverflowError, "string column larger than 2 GiB");
                goto done;
            }
        } else {
            type_error("a string", item);
            goto done;
        }
        off[i + 1] = (int32_t)data.len;
    }
    validity = validity_of(items, n, nulls);
    if (validity == NULL) goto done;
    bytes = buffer_bytes(&data);
    if (bytes == NULL) goto done;
    out = Py_BuildValue("(OOOn)", validity, offsets, bytes, nulls);
done:
    PyMem_Free(data.buf);
    Py_XDECREF(validity);
    Py_XDECREF(bytes);
    Py_XDECREF(offsets);
    Py_DECREF(seq);
    return out;
}

/* pack_string_lists(seq) -> (validity or None, int32 list offsets, int32 string offsets, UTF-8 data, null count):
 * a list<string> column whose elements are lists or tuples of str (or None). */
static PyObject *pack_string_lists(PyObject *module, PyObject *arg) {
    (void)module;
    PyObject *seq = PySequence_Fast(arg, "pack_string_lists needs a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), nulls = 0, count = 0;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *list_offsets = PyBytes_FromStringAndSize(NULL, (n + 1) * 4), *out = NULL, *validity = NULL;
    PyObject *str_offsets = NULL, *bytes = NULL;
    Buffer offsets = {NULL, 0, 0}, data = {NULL, 0, 0};
    if (list_offsets == NULL) goto done;
    int32_t *loff = (int32_t *)PyBytes_AS_STRING(list_offsets);
    loff[0] = 0;
    if (buffer_reserve(&offsets, 4) < 0) goto done;
    memset(offsets.buf, 0, 4);
    offsets.len = 4;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = items[i];
        if (item == Py_None) {
            nulls++;
        } else if (PyList_CheckExact(item) || PyTuple_CheckExact(item)) {
            Py_ssize_t m = PySequence_Fast_GET_SIZE(item);
            PyObject **strs = PySequence_Fast_ITEMS(item);
            if (buffer_reserve(&offsets, m * 4) < 0) goto done;
            for (Py_ssize_t j = 0; j < m; j++) {
                if (!PyUnicode_CheckExact(strs[j])) {
                    type_error("a list of strings", strs[j]);
                    goto done;
                }
                if (append_utf8(&data, strs[j]) < 0) goto done;
                if (data.len > INT32_MAX) {
                    PyErr_SetString(PyExc_OverflowError, "string column larger than 2 GiB");
                    goto done;
                }
                int32_t end = (int32_t)data.len;
                memcpy(offsets.buf + offsets.len, &end, 4);
                offsets.len += 4;
            }
            count += m;
            if (count > INT32_MAX) {
                PyErr_SetString(PyExc_OverflowError, "list column with more than 2^31 elements");
                goto done;
            }
        } else {
            type_error("a list of strings", item);
            goto done;
        }
        loff[i + 1] = (int32_t)count;
    }
    validity = validity_of(items, n, nulls);
    if (validity == NULL) goto done;
    str_offsets = buffer_bytes(&offsets);
    if (str_offsets == NULL) goto done;
    bytes = buffer_bytes(&data);
    if (bytes == NULL) goto done;
    out = Py_BuildValue("(OOOOn)", validity, list_offsets, str_offsets, bytes, nulls);
done:
    PyMem_Free(offsets.buf);
    PyMem_Free(data.buf);
    Py_XDECREF(validity);
    Py_XDECREF(str_offsets);
    Py_XDECREF(bytes);
    Py_XDECREF(list_offsets);
    Py_DECREF(seq);
    return out;
}

/* An 8-byte column: exact ints (not bools) as int64, or exact floats as float64; None is null. */
static PyObject *pack_eight(PyObject *arg, int floats) {
    PyObject *seq = PySequence_Fast(arg, "pack_int64 / pack_float64 need a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), nulls = 0;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *values = PyBytes_FromStringAndSize(NULL, n * 8), *validity = NULL, *out = NULL;
    if (values == NULL) goto done;
    char *v = PyBytes_AS_STRING(values);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = items[i];
        int64_t x = 0;
        if (item == Py_None) {
            nulls++;
        } else if (floats && PyFloat_CheckExact(item)) {
            double d = PyFloat_AS_DOUBLE(item);
            memcpy(&x, &d, 8);
        } else if (!floats && PyLong_CheckExact(item)) {
            int overflow;
            x = (int64_t)PyLong_AsLongLongAndOverflow(item, &overflow);
            if (overflow) {
                PyErr_SetString(PyExc_OverflowError, "int too large for an int64 column");
                goto done;
            }
        } else {
            type_error(floats ? "a float" : "an integer", item);
            goto done;
        }
        memcpy(v + 8 * i, &x, 8);
    }
    validity = validity_of(items, n, nulls);
    if (validity == NULL) goto done;
    out = Py_BuildValue("(OOn)", validity, values, nulls);
done:
    Py_XDECREF(validity);
    Py_XDECREF(values);
    Py_DECREF(seq);
    return out;
}

/* pack_int64(seq) -> (validity or None, int64 data, null count) */
static PyObject *pack_int64(PyObject *module, PyObject *arg) {
    (void)module;
    return pack_eight(arg, 0);
}

/* pack_float64(seq) -> (validity or None, float64 data, null count) */
static PyObject *pack_float64(PyObject *module, PyObject *arg) {
    (void)module;
    return pack_eight(arg, 1);
}

static PyMethodDef methods[] = {
    {"pack_strings", pack_strings, METH_O, "(validity or None, int32 offsets, UTF-8 data, null count) of str/None."},
    {"pack_string_lists", pack_string_lists, METH_O,
     "(validity or None, list offsets, string offsets, UTF-8 data, null count) of lists of str / None."},
    {"pack_int64", pack_int64, METH_O, "(validity or None, int64 data, null count) of int/None."},
    {"pack_float64", pack_float64, METH_O, "(validity or None, float64 data, null count) of float/None."},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_arrowpack", "Arrow buffers for the receiver's columns (see _arrowpack.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__arrowpack(void) { return PyModule_Create(&module_def); }
