"""The host twin of the board's SoC filter (firmware/ekf.py), over a whole log.

Same model, same equations, same order of operations: the board runs the filter in
MicroPython once per tick; this module runs it over every sample of a Battery Data Format
log at more than a million samples per second. A per-sample Python loop cannot reach
that, so the loop is a small C kernel (the C source below) compiled once with the
system C compiler and loaded with ctypes. It is compiled twice from one source: REAL =
double (the reference, what the unix-port simulator computes) and REAL = float (what the
RP2040's 32-bit floats compute), so the board's float32 behaviour is tested on the host.
Without a C compiler the float64 mode falls back to firmware/ekf.py itself (slow, same
numbers); the float32 mode then raises InputError.

Units: t_s seconds, i_A amperes (> 0 charges the cell), v_V volts; SoC 1 = full.
"""

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from . import fw
from .errors import InputError
from .model import load_model

SOC_MIN = -0.05
SOC_MAX = 1.05

_C_SOURCE = r"""
#include <math.h>
#include <stddef.h>

#ifndef REAL
#define REAL double
#endif
#if REAL_IS_FLOAT
#define EXP expf
#define SQRT sqrtf
#define FABS fabsf
#else
#define EXP exp
#define SQRT sqrt
#define FABS fabs
#endif
#define C(x) ((REAL)(x))
#define NX 5

/* Same constants as firmware/ekf.py. */
#define SOC_MIN C(-0.05)
#define SOC_MAX C(1.05)
#define FOLD C(1e-3)
#define VAR_SOC_MAX C(1.0)
#define VAR_H_MAX C(1.0)
#define VAR_UNKNOWN (C(1.0) / C(12.0))
#define ITER_MAX 5

typedef struct {
    int npt, nrc, bias, soc_given;
    double z0, dz, q_As, eta, m_V, m0_V, gamma;
    double sigma_v, sigma_i, gate, i_rest;
    double rc_ohm[2], rc_tau_s[2];
    double q[NX], floor_[NX], p0[NX];
    double p0_soc, soc0;
    const double *ocv_V, *r0_ohm, *m_V_tab;
} Params;

typedef struct {
    int n, ih, ib, nrc, npt, seg, defer;
    REAL x[NX], P[NX * NX], M[NX * NX], d[NX], g[NX], u[NX], h[NX], ph[NX], k[NX];
    REAL q[NX], floor_[NX];
    REAL pend, s;
    REAL ocv, slope, r0, dr0, m, dm;
    REAL z0, dz, q_As, eta, m_V, m0_V, gamma, sigma_v, sigma_i, gate, i_rest;
    REAL rc_ohm[2], rc_tau_s[2];
    REAL ocv_tab[256], r0_tab[256], m_tab[256];
} Ekf;

static void lookup(Ekf *f, REAL z) {
    REAL pos = (z - f->z0) / f->dz;
    int last = f->npt - 2;
    int j = pos > C(0.0) ? (int)pos : 0;
    if (j > last) j = last;
    f->seg = j;
    REAL frac = pos - (REAL)j;
    const REAL *v = f->ocv_tab, *r = f->r0_tab, *m = f->m_tab;
    f->slope = (v[j + 1] - v[j]) / f->dz;
    f->ocv = v[j] + frac * (v[j + 1] - v[j]);
    if (frac <= C(0.0)) { f->r0 = r[j]; f->m = m[j]; f->dr0 = f->dm = C(0.0); }
    else if (frac >= C(1.0)) { f->r0 = r[j + 1]; f->m = m[j + 1]; f->dr0 = f->dm = C(0.0); }
    else {
        f->r0 = r[j] + frac * (r[j + 1] - r[j]); f->dr0 = (r[j + 1] - r[j]) / f->dz;
        f->m = m[j] + frac * (m[j + 1] - m[j]); f->dm = (m[j + 1] - m[j]) / f->dz;
    }
}

static REAL soc_at(const Ekf *f, REAL v_V, int *outside) {
    const REAL *v = f->ocv_tab;
    int last = f->npt - 2, j = 0;
    while (j < last && v_V > v[j + 1]) j++;
    REAL z = f->z0 + ((REAL)j + (v_V - v[j]) / (v[j + 1] - v[j])) * f->dz;
    *outside = z < SOC_MIN || z > SOC_MAX;
    return z < SOC_MIN ? SOC_MIN : (z > SOC_MAX ? SOC_MAX : z);
}

static void cap(Ekf *f, int r, REAL vmax) {
    int n = f->n;
    REAL prr = f->P[r * n + r];
    if (prr <= vmax) return;
    REAL s = SQRT(vmax / prr);
    for (int c = 0; c < n; c++) { f->P[r * n + c] *= s; f->P[c * n + r] *= s; }
}

static void condition(Ekf *f) {
    int n = f->n, ih = f->ih;
    REAL *x = f->x, *P = f->P;
    REAL z = x[0] + f->pend;
    if (z < SOC_MIN || z > SOC_MAX) {
        x[0] = z < SOC_MIN ? SOC_MIN : SOC_MAX;
        f->pend = C(0.0);
    }
    if (x[ih] > C(1.0)) x[ih] = C(1.0);
    else if (x[ih] < C(-1.0)) x[ih] = C(-1.0);
    cap(f, 0, VAR_SOC_MAX);
    cap(f, ih, VAR_H_MAX);
    for (int r = 0; r < n; r++)
        if (P[r * n + r] < f->floor_[r]) P[r * n + r] = f->floor_[r];
}

static void reset(Ekf *f, const Params *p, int soc_given, REAL soc, REAL v, REAL i) {
    int n = f->n, ih = f->ih;
    f->defer = 0;
    for (int k = 0; k < n * n; k++) f->P[k] = C(0.0);
    for (int k = 0; k < n; k++) { f->x[k] = C(0.0); f->P[k * n + k] = (REAL)p->p0[k]; }
    if (soc_given) {
        f->x[0] = soc < SOC_MIN ? SOC_MIN : (soc > SOC_MAX ? SOC_MAX : soc);
        f->P[0] = (REAL)p->p0_soc;
    } else {
        int outside;
        REAL z = soc_at(f, v, &outside);
        lookup(f, z);
        z = soc_at(f, v - f->r0 * i, &outside);
        lookup(f, z);
        f->x[0] = z;
        f->defer = outside;
        if (outside) {
            f->P[0] = VAR_UNKNOWN;
        } else {
            REAL p0_h = f->P[ih * n + ih];
            REAL c = f->m / f->slope;
            REAL sv = f->sigma_v / f->slope;
            f->P[0] = c * c * p0_h + sv * sv;
            f->P[ih] = f->P[ih * n] = -c * p0_h;
        }
    }
    f->pend = C(0.0);
    f->s = C(0.0);
    condition(f);
}

static void propagate_cov(Ekf *f, REAL dt) {
    int n = f->n, ib = f->ib;
    REAL *P = f->P, *d = f->d, *g = f->g, *u = f->u;
    REAL si2 = f->sigma_i * f->sigma_i, pbb = C(0.0);
    if (ib >= 0) {
        for (int r = 0; r < n; r++) u[r] = d[r] * P[r * n + ib];
        pbb = P[ib * n + ib];
    }
    for (int r = 0; r < n; r++)
        for (int c = r; c < n; c++) {
            REAL v = d[r] * d[c] * P[r * n + c] + si2 * g[r] * g[c];
            if (ib >= 0) v = v - u[r] * g[c] - g[r] * u[c] + g[r] * g[c] * pbb;
            if (r == c) v = v + f->q[r] * dt;
            P[r * n + c] = v;
            P[c * n + r] = v;
        }
}

static void predict(Ekf *f, REAL i, REAL dt) {
    REAL *x = f->x, *d = f->d, *g = f->g;
    REAL k = dt / f->q_As;
    if (i > C(0.0)) k = k * f->eta;
    d[0] = C(1.0);
    g[0] = k;
    f->pend += k * i;
    for (int j = 0; j < f->nrc; j++) {
        REAL a = EXP(-dt / f->rc_tau_s[j]);
        REAL b = f->rc_ohm[j] * (C(1.0) - a);
        x[1 + j] = a * x[1 + j] + b * i;
        d[1 + j] = a;
        g[1 + j] = b;
    }
    int ih = f->ih;
    REAL sg = i > C(0.0) ? C(1.0) : (i < C(0.0) ? C(-1.0) : C(0.0));
    REAL kh = f->gamma * dt / f->q_As;
    REAL ah = EXP(-FABS(i) * kh);
    REAL h = x[ih];
    x[ih] = ah * h + (C(1.0) - ah) * sg;
    d[ih] = ah;
    g[ih] = -kh * sg * ah * (h - sg);
    if (f->ib >= 0) { d[f->ib] = C(1.0); g[f->ib] = C(0.0); }
    propagate_cov(f, dt);
    if (f->pend >= FOLD || f->pend <= -FOLD) { x[0] += f->pend; f->pend = C(0.0); }
}

static REAL measure(Ekf *f, REAL z, REAL i) {
    int ih = f->ih;
    REAL *x = f->x, *H = f->h;
    lookup(f, z);
    REAL vm = f->ocv + f->m * x[ih] + f->m0_V * f->s + f->r0 * i;
    for (int j = 0; j < f->nrc; j++) { vm += x[1 + j]; H[1 + j] = C(1.0); }
    H[0] = f->slope + f->dr0 * i + f->dm * x[ih];
    H[ih] = f->m;
    if (f->ib >= 0) H[f->ib] = -f->r0;
    return vm;
}

static REAL gain(Ekf *f, REAL R) {
    int n = f->n;
    REAL *P = f->P, *H = f->h, *ph = f->ph, *K = f->k, hph = C(0.0);
    for (int r = 0; r < n; r++) {
        REAL acc = C(0.0);
        for (int c = 0; c < n; c++) acc += P[r * n + c] * H[c];
        ph[r] = acc;
        hph += H[r] * acc;
    }
    REAL S = hph + R;
    for (int r = 0; r < n; r++) K[r] = ph[r] / S;
    return hph;
}

/* Iterated EKF update, as firmware/ekf.py Ekf._update. Returns the prior model voltage. */
static REAL update(Ekf *f, REAL i, REAL v) {
    int n = f->n;
    REAL *x = f->x, *P = f->P, *H = f->h, *ph = f->ph, *K = f->k, *M = f->M, *w = f->u;
    REAL xp[NX];
    for (int r = 0; r < n; r++) xp[r] = x[r];
    REAL zp = x[0] + f->pend, z = zp, dz = C(0.0);
    REAL vm0 = measure(f, z, i);
    REAL e = v - vm0;
    REAL rv = f->sigma_i * f->r0 + f->sigma_v;
    REAL R = rv * rv;
    REAL hph = gain(f, R);
    if (e * e > f->gate * f->gate * (hph + R)) {
        R = e * e / (f->gate * f->gate) - hph;
        gain(f, R);
    }
    for (int it = 0; it < ITER_MAX; it++) {
        int seg = f->seg;
        dz = K[0] * e;
        REAL zn = zp + dz;
        for (int r = 1; r < n; r++) x[r] = xp[r] + K[r] * e;
        lookup(f, zn);
        if (f->seg == seg || it == ITER_MAX - 1) break;
        z = zn;
        REAL vm = measure(f, z, i);
        e = v - vm - H[0] * (zp - z);
        for (int r = 1; r < n; r++) e -= H[r] * (xp[r] - x[r]);
        gain(f, R);
    }
    f->pend += dz;
    for (int r = 0; r < n; r++)
        for (int c = 0; c < n; c++) M[r * n + c] = P[r * n + c] - K[r] * ph[c];
    for (int r = 0; r < n; r++) {
        REAL acc = C(0.0);
        for (int c = 0; c < n; c++) acc += M[r * n + c] * H[c];
        w[r] = acc;
    }
    for (int r = 0; r < n; r++) {
        REAL kr = K[r] * R;
        for (int c = r; c < n; c++)
            P[r * n + c] = P[c * n + r] = M[r * n + c] - w[r] * K[c] + kr * K[c];
    }
    return vm0;
}

/* Run the filter over n samples. x_out (n*nx) and P_out (n*nx*nx) may be NULL.
   Returns the number of states, or -1 for a table too large. */
int ekf_run(const Params *p, long ns, const double *t_s, const double *i_A, const double *v_V,
            double *soc, double *std, double *vmodel, double *x_out, double *P_out) {
    Ekf f;
    if (p->npt < 2 || p->npt > 256) return -1;
    f.nrc = p->nrc; f.npt = p->npt;
    f.n = 2 + p->nrc + (p->bias ? 1 : 0);
    f.ih = 1 + p->nrc; f.ib = p->bias ? f.ih + 1 : -1;
    f.z0 = (REAL)p->z0; f.dz = (REAL)p->dz; f.q_As = (REAL)p->q_As; f.eta = (REAL)p->eta;
    f.m_V = (REAL)p->m_V; f.m0_V = (REAL)p->m0_V; f.gamma = (REAL)p->gamma;
    f.sigma_v = (REAL)p->sigma_v; f.sigma_i = (REAL)p->sigma_i; f.gate = (REAL)p->gate;
    f.i_rest = (REAL)p->i_rest;
    for (int j = 0; j < 2; j++) {
        f.rc_ohm[j] = (REAL)p->rc_ohm[j];
        f.rc_tau_s[j] = (REAL)p->rc_tau_s[j];
    }
    for (int k = 0; k < NX; k++) { f.q[k] = (REAL)p->q[k]; f.floor_[k] = (REAL)p->floor_[k]; }
    for (int k = 0; k < p->npt; k++) {
        f.ocv_tab[k] = (REAL)p->ocv_V[k];
        f.r0_tab[k] = (REAL)p->r0_ohm[k];
        f.m_tab[k] = (REAL)p->m_V_tab[k];
    }
    int n = f.n;
    for (long s = 0; s < ns; s++) {
        /* the board receives integer nA, uV, ms and scales them */
        REAL i = (REAL)i_A[s], v = (REAL)v_V[s];
        double dt = s ? t_s[s] - t_s[s - 1] : 0.0;
        int first = s == 0;
        if (s == 0) {
            reset(&f, p, p->soc_given, (REAL)p->soc0, v, i);
        } else if (f.defer) {  /* no credible OCV yet: restart from this sample */
            reset(&f, p, 0, C(0.0), v, i);
            first = 1;
            dt = 0.0;
        }
        if (first || dt > 0.0) {
            if (f.ib >= 0) i = i - f.x[f.ib];
            if (i > f.i_rest) f.s = C(1.0);
            else if (i < -f.i_rest) f.s = C(-1.0);
            if (dt > 0.0) predict(&f, i, (REAL)dt);
            vmodel[s] = (double)update(&f, i, v);
            condition(&f);
        } else {
            vmodel[s] = s ? vmodel[s - 1] : (double)v;
        }
        soc[s] = (double)(f.x[0] + f.pend);
        std[s] = (double)SQRT(f.P[0]);
        if (x_out) {
            for (int k = 0; k < n; k++) x_out[s * n + k] = (double)f.x[k];
            x_out[s * n] = soc[s];  /* SoC with the pending sum */
        }
        if (P_out) for (int k = 0; k < n * n; k++) P_out[s * n * n + k] = (double)f.P[k];
    }
    return n;
}
"""


class _Params(ctypes.Structure):
    _fields_ = [
        ("npt", ctypes.c_int), ("nrc", ctypes.c_int), ("bias", ctypes.c_int),
        ("soc_given", ctypes.c_int),
        ("z0", ctypes.c_double), ("dz", ctypes.c_double), ("q_As", ctypes.c_double),
        ("eta", ctypes.c_double), ("m_V", ctypes.c_double), ("m0_V", ctypes.c_double),
        ("gamma", ctypes.c_double),
        ("sigma_v", ctypes.c_double), ("sigma_i", ctypes.c_double), ("gate", ctypes.c_double),
        ("i_rest", ctypes.c_double),
        ("rc_ohm", ctypes.c_double * 2), ("rc_tau_s", ctypes.c_double * 2),
        ("q", ctypes.c_double * 5), ("floor_", ctypes.c_double * 5), ("p0", ctypes.c_double * 5),
        ("p0_soc", ctypes.c_double), ("soc0", ctypes.c_double),
        ("ocv_V", ctypes.POINTER(ctypes.c_double)), ("r0_ohm", ctypes.POINTER(ctypes.c_double)),
        ("m_V_tab", ctypes.POINTER(ctypes.c_double)),
    ]


_LIBS = {}


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cellbench"


def _compile(dtype: str):
    """Compile the kernel for dtype ("float64" or "float32") once; return the ctypes lib."""
    if dtype in _LIBS:
        return _LIBS[dtype]
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        _LIBS[dtype] = None
        return None
    real = "float" if dtype == "float32" else "double"
    # No -ffast-math: the float32 build must round every operation like the board does.
    flags = ["-O2", "-fPIC", "-shared", "-ffp-contract=off", f"-DREAL={real}",
             f"-DREAL_IS_FLOAT={int(real == 'float')}"]
    key = hashlib.sha256((_C_SOURCE + " ".join(flags)).encode()).hexdigest()[:16]
    out = _cache_dir() / f"ekf_{dtype}_{key}.so"
    if not out.exists():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError:  # read-only home: build in the temp directory instead
            out = Path(tempfile.gettempdir()) / f"cellbench-{os.getuid()}" / out.name
            out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            src = Path(tmp) / "ekf.c"
            src.write_text(_C_SOURCE)
            so = Path(tmp) / "ekf.so"
            res = subprocess.run([cc, *flags, "-o", str(so), str(src), "-lm"],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"compiling the EKF kernel failed:\n{res.stderr}")
            os.replace(so, out)  # atomic: parallel test workers may race here
    lib = ctypes.CDLL(str(out))
    dp = ctypes.POINTER(ctypes.c_double)
    lib.ekf_run.argtypes = [ctypes.POINTER(_Params), ctypes.c_long, dp, dp, dp, dp, dp, dp,
                            dp, dp]
    lib.ekf_run.restype = ctypes.c_int
    _LIBS[dtype] = lib
    return lib


def filter_for(model) -> "object":
    """The firmware filter object (firmware/ekf.py Ekf) for a model dict or path.

    Bad model fields raise InputError naming the field.
    """
    model = load_model(model)
    try:
        return fw.module("ekf").Ekf(model)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"model: {exc}") from None


def _params(ekf, soc0) -> tuple:
    """Pack the firmware filter's parsed model into the kernel's Params (+ keep-alive arrays)."""
    p = _Params()
    p.npt, p.nrc, p.bias = len(ekf.ocv_V), ekf.nrc, int(ekf.bias)
    p.z0, p.dz, p.q_As, p.eta = ekf.z0, ekf.dz, ekf.q_As, ekf.eta
    p.m_V, p.m0_V, p.gamma = ekf.m_V, ekf.m0_V, ekf.gamma
    p.sigma_v, p.sigma_i, p.gate, p.i_rest = ekf.sigma_v, ekf.sigma_i, ekf.gate, ekf.i_rest
    for j in range(ekf.nrc):
        p.rc_ohm[j], p.rc_tau_s[j] = ekf.rc_ohm[j], ekf.rc_tau_s[j]
    n = ekf.n
    ekf.reset(soc=0.5)  # the prior variances of every state but SoC
    for k in range(n):
        p.q[k], p.floor_[k], p.p0[k] = ekf._q[k], ekf._floor[k], ekf.P[k * n + k]
    est = ekf._est
    mod = fw.module("ekf")
    p.p0_soc = mod._num(est, "p0_soc", mod.DEFAULTS["p0_soc"])
    p.soc_given = int(soc0 is not None)
    p.soc0 = float(soc0) if soc0 is not None else 0.0
    ocv = np.ascontiguousarray(ekf.ocv_V, dtype=np.float64)
    r0 = np.ascontiguousarray(ekf.r0_ohm, dtype=np.float64)
    m = np.ascontiguousarray(ekf.m_tab, dtype=np.float64)
    dp = ctypes.POINTER(ctypes.c_double)
    p.ocv_V, p.r0_ohm, p.m_V_tab = (a.ctypes.data_as(dp) for a in (ocv, r0, m))
    return p, (ocv, r0, m)


def _check_inputs(t_s, i_A, v_V):
    arrays = []
    for name, a in (("Test Time / s", t_s), ("Current / A", i_A), ("Voltage / V", v_V)):
        a = np.ascontiguousarray(a, dtype=np.float64)
        if a.ndim != 1:
            raise InputError(f"{name}: must be one-dimensional")
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name}: contains NaN or infinite values")
        arrays.append(a)
    if not len(arrays[0]) == len(arrays[1]) == len(arrays[2]):
        raise InputError("log: time, current and voltage differ in length")
    if len(arrays[0]) == 0:
        raise InputError("log: no samples")
    return arrays


def estimate(model, t_s, i_A, v_V, soc0=None, dtype="float64", full=False):
    """Run the SoC filter over a log. Returns a dict of numpy arrays (one per sample):

    ``soc`` (1 = full), ``soc_std`` (standard deviation of SoC), ``v_model`` (V, the
    one-step-ahead model voltage). With ``full=True`` also ``x`` (samples x states) and
    ``P`` (samples x states x states). ``soc0`` None initialises from the OCV at the first
    sample (assumed rested, h = 0); a number starts there with variance p0_soc.
    Samples with a non-increasing time are repeats: they leave the estimate unchanged.
    ``dtype="float32"`` runs every operation in 32-bit floats, as the RP2040 does.
    """
    ekf = filter_for(model)
    t_s, i_A, v_V = _check_inputs(t_s, i_A, v_V)
    if soc0 is not None and not (SOC_MIN <= float(soc0) <= SOC_MAX):
        raise InputError(f"soc0: must be within [{SOC_MIN}, {SOC_MAX}]")
    if dtype not in ("float64", "float32"):
        raise InputError("dtype: must be float64 or float32")
    lib = _compile(dtype)
    if lib is None:
        if dtype == "float32":
            raise InputError("dtype: float32 needs a C compiler (cc) on PATH")
        return _estimate_python(ekf, t_s, i_A, v_V, soc0, full)
    ns, n = len(t_s), ekf.n
    p, keep = _params(ekf, soc0)
    out, x, P = _outputs(ns, n, full)
    dp = ctypes.POINTER(ctypes.c_double)
    ptr = lambda a: a.ctypes.data_as(dp) if a is not None else None  # noqa: E731
    rc = lib.ekf_run(ctypes.byref(p), ns, ptr(t_s), ptr(i_A), ptr(v_V), ptr(out["soc"]),
                     ptr(out["soc_std"]), ptr(out["v_model"]), ptr(x), ptr(P))
    del keep
    if rc < 0:
        raise InputError("ocv.soc: at most 256 table points")
    if full:
        out["x"], out["P"] = x, P
    return out


def _outputs(ns, n, full):
    """Empty result arrays for ns samples of an n-state filter: (out dict, x, P); x and P
    are None unless ``full``."""
    out = {k: np.empty(ns) for k in ("soc", "soc_std", "v_model")}
    if not full:
        return out, None, None
    return out, np.empty((ns, n)), np.empty((ns, n, n))


def _estimate_python(ekf, t_s, i_A, v_V, soc0, full):
    """Fallback without a C compiler: the firmware filter itself, one sample at a time."""
    ns, n = len(t_s), ekf.n
    out, x, P = _outputs(ns, n, full)
    if soc0 is not None:
        ekf.reset(soc=soc0)
    else:
        ekf.reset(v_uV=v_V[0] * 1e6, i_nA=i_A[0] * 1e9)
    for s in range(ns):
        dt_ms = (t_s[s] - t_s[s - 1]) * 1000.0 if s else 0.0
        ekf.step(i_A[s] * 1e9, v_V[s] * 1e6, dt_ms)  # a repeat leaves v_model as it was
        out["v_model"][s] = ekf.v_model
        out["soc"][s] = ekf.soc
        out["soc_std"][s] = np.sqrt(ekf.P[0])
        if full:
            x[s] = ekf.x
            x[s, 0] = ekf.soc
            P[s] = np.reshape(ekf.P, (n, n))
    if full:
        out["x"], out["P"] = x, P
    return out


def read_log_columns(path) -> dict:
    """Time, current and voltage of a log (any format cellbench.bdflog.read_log reads)."""
    from .bdflog import read_log
    cols = read_log(path)
    return {name: cols[name] for name in ("Test Time / s", "Current / A", "Voltage / V")}
