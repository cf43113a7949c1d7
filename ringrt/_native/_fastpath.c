/* The small all_reduce's synchronisation, copies and reduction in C: an optional speed-up of
 * ringrt/_algorithms/small_all_reduce.py, which runs the same steps in Python when this
 * module is not built (no C compiler at install time) or RINGRT_NO_NATIVE=1.
 *
 * One call does, on the words and half slots of a shared-memory arena (ringrt/_comm/shm.py):
 * stage this rank's data in the op's half slot, mark it staged, set its ticket, wake sleepers
 * (only if a peer's sleepers byte is set), spin a short while for every peer's ticket
 * (moving to another CPU if the late peer waits for ours: move_off), check
 * each peer is in this op and published the same call, reduce the halves in rank order into
 * the caller's buffer, set the release word and wake its sleepers. It hands back to Python
 * (which waits, checks or raises with the general machinery) whenever something is not
 * routine, and Python calls it again to go on from the step it reached:
 *
 *   run(data, count, seq, from_step, spin_ns) -> status
 *     data: an object with the buffer protocol (a NumPy array) or an int address (a torch
 *           tensor's data_ptr()), count elements of the plan's dtype.
 *     from_step 0: stage, signal, spin, check, reduce, release (the whole op);
 *               1: the peers' tickets reached (Python waited): check, reduce, release;
 *               2: checked by Python too: reduce, release.
 *     status 0: done;  1: a peer's ticket is not there after spin_ns (this rank signalled:
 *               Python waits, then calls again with from_step 1);  2: a peer's staged record
 *               or published call needs Python's checks (then from_step 2).
 *
 * Memory order: tickets, staged records and release words are stored with release order and
 * read with acquire order; a signal stores its word, then (sequentially consistent fence)
 * reads the sleepers bytes, and a waiter (Python, ShmArena._await) sets its byte before it
 * re-reads the word. Reductions are element by element in rank order, in the element type
 * (IEEE arithmetic, no fast-math: the same bits as NumPy's ufuncs); only the pairs
 * supports(dtype, op) accepts are compiled here, the others stay in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <limits.h>
#include <sched.h>            /* sched_getcpu, CPU_SET: Python.h defined _GNU_SOURCE */
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define MAX_RANKS 128          /* the arena's sleepers bytes: SLEEPER_BYTES in shm.py */
#define STEP_BITS 10           /* tickets.py */
#define SEQ_MASK (0xFFFFFFFFu >> STEP_BITS)
#define PUBLISHED_BYTES 64     /* shm.py: 8 int64 fields */
#define MOVE_AFTER_NS 4000     /* a peer this late may be waiting for our CPU (move_off) */
#define CPU_AT 128             /* shm.py: _CPU_AT, from the control block's start (the ticket) */

/* wire.py's dtype codes and _reduce_ops.ReduceOp's values */
enum { D_INT8 = 2, D_INT16, D_INT32, D_INT64, D_UINT8, D_UINT16, D_UINT32, D_UINT64,
       D_FLOAT16, D_FLOAT32, D_FLOAT64 };
enum { R_SUM = 1, R_AVG, R_PRODUCT, R_MIN, R_MAX, R_BAND, R_BOR, R_BXOR };

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);      /* what time.perf_counter_ns() reads on Linux */
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int reached(uint32_t ticket, uint32_t target) {
    return (uint32_t)(ticket - target) < 0x80000000u;
}

/* The CPU a rank ran its last small all_reduce on, plus one (0: unknown, as a new segment
 * reads), in its control block (shm.py's _CPU_AT). */
static inline int32_t *cpu_word(uint32_t *ticket) {
    return (int32_t *)((char *)ticket + CPU_AT);
}

static inline int32_t this_cpu_plus_one(void) {
#ifdef __linux__
    int cpu = sched_getcpu();
    return cpu < 0 ? 0 : cpu + 1;
#else
    return 0;
#endif
}

/* Move off `cpu` (where a peer we wait for is waiting to run): allow every CPU but it, which
 * migrates this thread at once, then allow them all again; it stays where it went. Returns
 * whether it moved (not when `cpu` is the only one allowed). */
static int move_off(int cpu) {
#ifdef __linux__
    cpu_set_t allowed, elsewhere;
    if (cpu < 0 || cpu >= CPU_SETSIZE || sched_getaffinity(0, sizeof allowed, &allowed) != 0)
        return 0;
    elsewhere = allowed;
    CPU_CLR(cpu, &elsewhere);
    if (CPU_COUNT(&elsewhere) == 0 || sched_setaffinity(0, sizeof elsewhere, &elsewhere) != 0)
        return 0;
    sched_setaffinity(0, sizeof allowed, &allowed);
    return 1;
#else
    (void)cpu;
    return 0;
#endif
}

typedef struct {
    PyObject_HEAD
    int rank, size, itemsize, dtype, op, skip_idle_wakes;
    Py_ssize_t half_bytes;
    uint32_t *ticket[MAX_RANKS];
    int64_t *staged[MAX_RANKS];           /* int64[2], by parity */
    const char *published[MAX_RANKS];
    char *half[2][MAX_RANKS];
    uint32_t *release;                    /* this rank's */
    uint64_t *ticket_woken, *release_woken;
    const uint8_t *sleepers;              /* this rank's segment: a byte per peer */
    uint64_t last_spin_ns;                /* how long the last inline spin took */
    int last_moved;                       /* whether the last run moved off a peer's CPU */
    PyObject *keep;                       /* what keeps the mappings alive */
} Plan;

static void wake(uint32_t *word, uint64_t *woken, uint32_t value, const Plan *p) {
    if (p->skip_idle_wakes) {
        __atomic_thread_fence(__ATOMIC_SEQ_CST);          /* our store, then their bytes */
        int sleeping = 0;
        for (int q = 0; q < p->size; q++)
            sleeping |= __atomic_load_n(&p->sleepers[q], __ATOMIC_RELAXED);
        if (!sleeping)
            return;
    }
#ifdef __linux__
    syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#endif
    /* wakeups.stamp: when the wake returned (microseconds, wrapping) and the value */
    __atomic_store_n(woken, ((now_ns() >> 10) << 32) | value, __ATOMIC_RELEASE);
}

/* out = h0 op h1, then out = out op hq for q = 2, 3, ... (x: the left operand, y: the right) */
#define REDUCE_LOOP(T, EXPR)                                                              \
    do {                                                                                 \
        T *out = (T *)dst;                                                               \
        const T *a = (const T *)p->half[parity][0], *b = (const T *)p->half[parity][1];  \
        for (Py_ssize_t i = 0; i < n; i++) { T x = a[i], y = b[i]; out[i] = (EXPR); }    \
        for (int q = 2; q < p->size; q++) {                                              \
            b = (const T *)p->half[parity][q];                                           \
            for (Py_ssize_t i = 0; i < n; i++) { T x = out[i], y = b[i]; out[i] = (EXPR); } \
        }                                                                                \
    } while (0)

#define INT_OPS(T, U)                                                                   \
    switch (p->op) {                                                                    \
    case R_SUM: REDUCE_LOOP(T, (T)((U)x + (U)y)); return;                               \
    case R_PRODUCT: REDUCE_LOOP(T, (T)((U)x * (U)y)); return;                           \
    case R_MIN: REDUCE_LOOP(T, y < x ? y : x); return;                                  \
    case R_MAX: REDUCE_LOOP(T, y > x ? y : x); return;                                  \
    case R_BAND: REDUCE_LOOP(T, x & y); return;                                         \
    case R_BOR: REDUCE_LOOP(T, x | y); return;                                          \
    case R_BXOR: REDUCE_LOOP(T, x ^ y); return;                                         \
    }

#define FLOAT_OPS(T)                                                                    \
    switch (p->op) {                                                                    \
    case R_SUM: case R_AVG: REDUCE_LOOP(T, x + y); return;                              \
    case R_PRODUCT: REDUCE_LOOP(T, x * y); return;                                      \
    }

/* dst = half[0] op half[1] op ... in rank order (NumPy: op(op(h0, h1), h2) ...) */
static void reduce_halves(const Plan *p, int parity, char *dst, Py_ssize_t n) {
    switch (p->dtype) {
    case D_INT8: INT_OPS(int8_t, uint8_t) break;
    case D_INT16: INT_OPS(int16_t, uint16_t) break;
    case D_INT32: INT_OPS(int32_t, uint32_t) break;
    case D_INT64: INT_OPS(int64_t, uint64_t) break;
    case D_UINT8: INT_OPS(uint8_t, uint8_t) break;
    case D_UINT16: INT_OPS(uint16_t, uint16_t) break;
    case D_UINT32: INT_OPS(uint32_t, uint32_t) break;
    case D_UINT64: INT_OPS(uint64_t, uint64_t) break;
    case D_FLOAT32: FLOAT_OPS(float) break;
    case D_FLOAT64: FLOAT_OPS(double) break;
    }
}

static int supported(int dtype, int op) {
    if (dtype >= D_INT8 && dtype <= D_UINT64)
        return op == R_SUM || (op >= R_PRODUCT && op <= R_BXOR);
    if (dtype == D_FLOAT32 || dtype == D_FLOAT64)
        return op == R_SUM || op == R_AVG || op == R_PRODUCT;
    return 0;
}

static int itemsize_of(int dtype) {
    switch (dtype) {
    case D_INT8: case D_UINT8: return 1;
    case D_INT16: case D_UINT16: case D_FLOAT16: return 2;
    case D_INT32: case D_UINT32: case D_FLOAT32: return 4;
    default: return 8;
    }
}

static void *address_of(PyObject *o) {
    void *a = PyLong_AsVoidPtr(o);
    if (a == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "a null address");
    return a;
}

/* Plan(rank, size, dtype, op, skip_idle_wakes, half_bytes, tickets, staged, published,
 *      halves0, halves1, release, ticket_woken, release_woken, sleepers, keep):
 * addresses as ints, the per-rank ones as tuples of `size`; keep holds the objects that keep
 * the mappings alive (NumPy views of them) for as long as the plan lives. */
static int Plan_init(Plan *self, PyObject *args, PyObject *kwds) {
    PyObject *tickets, *staged, *published, *halves0, *halves1, *keep;
    PyObject *release, *ticket_woken, *release_woken, *sleepers;
    if (!PyArg_ParseTuple(args, "iiiipnO!O!O!O!O!OOOOO", &self->rank, &self->size,
                          &self->dtype, &self->op, &self->skip_idle_wakes, &self->half_bytes,
                          &PyTuple_Type, &tickets, &PyTuple_Type, &staged,
                          &PyTuple_Type, &published, &PyTuple_Type, &halves0,
                          &PyTuple_Type, &halves1, &release, &ticket_woken, &release_woken,
                          &sleepers, &keep))
        return -1;
    if (self->size < 2 || self->size > MAX_RANKS || self->rank < 0 || self->rank >= self->size) {
        PyErr_Format(PyExc_ValueError, "Plan: rank %d of %d is not supported", self->rank,
                     self->size);
        return -1;
    }
    if (!supported(self->dtype, self->op)) {
        PyErr_Format(PyExc_ValueError, "Plan: dtype code %d with reduction %d is not compiled",
                     self->dtype, self->op);
        return -1;
    }
    PyObject *lists[5] = {tickets, staged, published, halves0, halves1};
    for (int i = 0; i < 5; i++)
        if (PyTuple_GET_SIZE(lists[i]) != self->size) {
            PyErr_SetString(PyExc_ValueError, "Plan: one address per rank");
            return -1;
        }
    self->itemsize = itemsize_of(self->dtype);
    for (int q = 0; q < self->size; q++) {
        if (!(self->ticket[q] = address_of(PyTuple_GET_ITEM(tickets, q)))) return -1;
        if (!(self->staged[q] = address_of(PyTuple_GET_ITEM(staged, q)))) return -1;
        if (!(self->published[q] = address_of(PyTuple_GET_ITEM(published, q)))) return -1;
        if (!(self->half[0][q] = address_of(PyTuple_GET_ITEM(halves0, q)))) return -1;
        if (!(self->half[1][q] = address_of(PyTuple_GET_ITEM(halves1, q)))) return -1;
    }
    if (!(self->release = address_of(release)) || !(self->ticket_woken = address_of(ticket_woken))
        || !(self->release_woken = address_of(release_woken))
        || !(self->sleepers = address_of(sleepers)))
        return -1;
    Py_XSETREF(self->keep, Py_NewRef(keep));
    return 0;
}

static void Plan_dealloc(Plan *self) {
    Py_XDECREF(self->keep);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Plan_run(Plan *p, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "run(data, count, seq, from_step, spin_ns)");
        return NULL;
    }
    Py_ssize_t count = PyLong_AsSsize_t(args[1]);
    long long seq = PyLong_AsLongLong(args[2]);
    long from_step = PyLong_AsLong(args[3]);
    long long spin_ns = PyLong_AsLongLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t nbytes = count * p->itemsize;
    if (count < 0 || nbytes > p->half_bytes) {
        PyErr_SetString(PyExc_ValueError, "run: count does not fit the half slot");
        return NULL;
    }
    Py_buffer view;
    int viewed = 0;
    char *data;
    if (PyLong_Check(args[0])) {
        data = PyLong_AsVoidPtr(args[0]);          /* 0 for an empty tensor */
        if (data == NULL && (PyErr_Occurred() || nbytes)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "run: a null address");
            return NULL;
        }
    } else {
        if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
            return NULL;
        viewed = 1;
        data = view.buf;
        if (view.len < nbytes) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_ValueError, "run: the buffer is smaller than count elements");
            return NULL;
        }
    }
    int parity = (int)(seq & 1);
    int me = p->rank, status = 0;
    uint32_t target = (uint32_t)(((uint64_t)seq << STEP_BITS) + 1);
    if (from_step == 0) {
        p->last_moved = 0;
        __atomic_store_n(cpu_word(p->ticket[me]), this_cpu_plus_one(), __ATOMIC_RELAXED);
        memcpy(p->half[parity][me], data, (size_t)nbytes);
        __atomic_store_n(&p->staged[me][parity], (int64_t)seq, __ATOMIC_RELEASE);
        __atomic_store_n(p->ticket[me], target, __ATOMIC_RELEASE);
        wake(p->ticket[me], p->ticket_woken, target, p);
        uint64_t start = 0, spun = 0;
        int moved = 0;                        /* at most one move an op */
        for (int q = 0; q < p->size && status == 0; q++) {
            if (q == me || reached(__atomic_load_n(p->ticket[q], __ATOMIC_ACQUIRE), target))
                continue;
            if (!start)
                start = now_ns();
            for (unsigned i = 1;; i++) {
                cpu_relax();
                if (reached(__atomic_load_n(p->ticket[q], __ATOMIC_ACQUIRE), target))
                    break;
                if ((i & 31) == 0) {
                    long long waited = (long long)(now_ns() - start);
                    if (waited > spin_ns) {
                        status = 1;
                        break;
                    }
                    if (waited > MOVE_AFTER_NS && !moved) {
                        /* the peer is late: if it last ran on our CPU, it waits for it
                         * (the kernel put us together after a wake-up): go elsewhere */
                        int32_t theirs = __atomic_load_n(cpu_word(p->ticket[q]),
                                                         __ATOMIC_RELAXED);
                        if (theirs > 0 && theirs == this_cpu_plus_one()) {
                            moved = 1;
                            if (move_off(theirs - 1)) {
                                p->last_moved = 1;
                                __atomic_store_n(cpu_word(p->ticket[me]), this_cpu_plus_one(),
                                                 __ATOMIC_RELAXED);
                            }
                        }
                    }
                }
            }
        }
        if (start)
            spun = now_ns() - start;
        p->last_spin_ns = spun;
    }
    if (status == 0 && from_step <= 1) {
        const char *mine = p->published[me];
        for (int q = 0; q < p->size; q++) {
            if (q == me)
                continue;
            uint32_t ticket = __atomic_load_n(p->ticket[q], __ATOMIC_ACQUIRE);
            if ((ticket >> STEP_BITS) != ((uint64_t)seq & SEQ_MASK) &&
                __atomic_load_n(&p->staged[q][parity], __ATOMIC_ACQUIRE) != seq) {
                status = 2;                            /* ShmOp._insist_same_op's case */
                break;
            }
            if (memcmp(p->published[q], mine, PUBLISHED_BYTES) != 0) {
                status = 2;                            /* another call, or being rewritten */
                break;
            }
        }
    }
    if (status == 0) {
        reduce_halves(p, parity, data, count);
        uint32_t released = target + 1;                /* encode_ticket(seq, 2) */
        __atomic_store_n(p->release, released, __ATOMIC_RELEASE);
        wake(p->release, p->release_woken, released, p);
    }
    if (viewed)
        PyBuffer_Release(&view);
    return PyLong_FromLong(status);
}

static PyObject *Plan_last_spin_ns(Plan *p, void *closure) {
    return PyLong_FromUnsignedLongLong(p->last_spin_ns);
}

static PyObject *Plan_last_moved(Plan *p, void *closure) {
    return PyBool_FromLong(p->last_moved);
}

static PyMethodDef Plan_methods[] = {
    {"run", (PyCFunction)(void (*)(void))Plan_run, METH_FASTCALL,
     "run(data, count, seq, from_step, spin_ns) -> 0 done, 1 wait for peers, 2 check"},
    {NULL}};

static PyGetSetDef Plan_getset[] = {
    {"last_spin_ns", (getter)Plan_last_spin_ns, NULL,
     "how long the last run's spin for peers took (ns; 0: none was missing)", NULL},
    {"last_moved", (getter)Plan_last_moved, NULL,
     "whether the last run moved this thread off the CPU a late peer was waiting for", NULL},
    {NULL}};

static PyTypeObject PlanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ringrt._native._fastpath.Plan",
    .tp_basicsize = sizeof(Plan),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One group's small all_reduce for one dtype and reduction (see the module).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Plan_init,
    .tp_dealloc = (destructor)Plan_dealloc,
    .tp_methods = Plan_methods,
    .tp_getset = Plan_getset,
};

static PyObject *supports(PyObject *self, PyObject *args) {
    int dtype, op;
    if (!PyArg_ParseTuple(args, "ii", &dtype, &op))
        return NULL;
    return PyBool_FromLong(supported(dtype, op));
}

static PyMethodDef module_methods[] = {
    {"supports", supports, METH_VARARGS,
     "supports(dtype_code, reduce_op) -> whether this module reduces that pair"},
    {NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpath",
    "The small all_reduce's steps in C (see ringrt/_algorithms/small_all_reduce.py).", -1,
    module_methods};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&PlanType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Plan", (PyObject *)&PlanType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "MAX_RANKS", MAX_RANKS);
    return m;
}
