/* The TVA race sums of race.py (_race_prob) and their gradient, in C.
 *
 * The same arithmetic as the torch path, in the same order where it matters, for the NUTS
 * potential: in torch a small model's race sums are some hundred tensor operations of a few
 * microseconds each; here one subject's (2 parameter vectors, 234 trials) take about 0.3 ms
 * forward and 0.2 ms backward. Loaded by compiled.py (ctypes); the torch path in race.py is
 * the reference and the fallback.
 *
 * Layout (float64, C-contiguous, B = batch of parameter vectors):
 *   rates (B, U, N) items/ms; kp (B, W, N+1) P(K = 0..N) per row; expo, t0, sd (B, U) ms
 *   (sd unused when fixed); the plan's pairs: ib, ia (display * 2^N + code), ik (row * (N+1)
 *   + |S|), sign, sign_full (P,); empty_ok (W,).
 *   need (U * 2^N,) uint8: 1 where a pair of the plan reads G_B (the other cells' decays are
 *   never computed). Saved by the forward for the backward: vb, u, g, g1, h (B, U, 2^N) and
 *   small, full (B, W, N+1).
 *
 * Decays (threshold.py): fixed G = exp(-u max(0, d)); Gaussian t0 (sd > 0)
 *   G = Phi(-d/s) + G1, G1 = exp(-u d + (u s)^2 / 2 + log Phi((d - u s^2) / s)),
 * with d = exposure - t0, and, since G1 phi(z) / Phi(z) = phi(d / s),
 *   dG/du = G1 (u s^2 - d) - s phi(d/s),  dG/dd = -u G1,  dG/ds = u^2 s G1 - u phi(d/s).
 */
#include <math.h>
#include <stdint.h>

#define HALF_LOG_2PI 0.91893853320467274178
#define INV_SQRT_2PI 0.39894228040143267794
#define SQRT1_2 0.70710678118654752440
#define MAX_K1 11 /* P(K = 0..N) for N <= 10 items (sets.MAX_ITEMS; compiled.py checks) */

/* log Phi(x): log(erfc(-x/sqrt2)/2) below -1 (erfc is accurate in relative terms there),
 * log1p(-erfc(x/sqrt2)/2) above; below -37.5, where erfc underflows, the asymptotic series
 * log Phi(x) = -x^2/2 - log(-x) - log(2 pi)/2 + log(1 - 1/x^2 + 3/x^4 - ...). */
static double log_ndtr(double x) {
    if (x < -37.5) {
        double z2 = 1.0 / (x * x), term = 1.0, sum = 1.0;
        for (int n = 1; n <= 8; n++) {
            term *= -(2.0 * n - 1.0) * z2;
            sum += term;
        }
        return -0.5 * x * x - log(-x) - HALF_LOG_2PI + log(sum);
    }
    if (x < -1.0) return log(0.5 * erfc(-x * SQRT1_2));
    return log1p(-0.5 * erfc(x * SQRT1_2));
}

/* The per-display tables of one parameter vector: vb, u (= V - v_B, unclamped) at every cell;
 * g, g1 (the Gaussian's second term) and h where need[cell] (a B of the plan), else 0. */
static void tables(int U, int N, int normal, const double *rates, const double *expo,
                   const double *t0, const double *sd, const uint8_t *need, double *vb,
                   double *u, double *g, double *g1, double *h) {
    const int M = 1 << N;
    for (int d = 0; d < U; d++) {
        const int64_t o = (int64_t)d * M;
        const double *r = rates + (int64_t)d * N;
        double total = 0.0;
        for (int x = 0; x < N; x++) total += r[x];
        const double dd = expo[d] - t0[d];
        const double s = normal ? sd[d] : 0.0;
        const double none = normal ? exp(log_ndtr(-dd / s)) : 0.0;
        for (int c = 0; c < M; c++) {
            double v = 0.0;
            for (int x = 0; x < N; x++)
                if (c >> x & 1) v += r[x];
            vb[o + c] = v;
            u[o + c] = total - v;
            if (!need[o + c]) {
                g[o + c] = g1[o + c] = h[o + c] = 0.0;
                continue;
            }
            const double uu = u[o + c] > 0.0 ? u[o + c] : 0.0;
            double gv;
            if (normal) {
                const double us = uu * s;
                g1[o + c] = exp(-uu * dd + 0.5 * us * us + log_ndtr((dd - uu * s * s) / s));
                gv = none + g1[o + c];
            } else {
                g1[o + c] = 0.0;
                gv = exp(-uu * (dd > 0.0 ? dd : 0.0));
            }
            g[o + c] = gv;
            h[o + c] = (1.0 - gv) / (uu > 0.0 ? uu : 1.0);
        }
    }
}

void tva_race_forward(int B, int U, int W, int N, int64_t P, int normal, const double *rates,
                      const double *kp, const double *expo, const double *t0, const double *sd,
                      const int64_t *ib, const int64_t *ia, const int64_t *ik,
                      const double *sign, const double *sign_full, const double *empty_ok,
                      const uint8_t *need, double *vb, double *u, double *g, double *g1,
                      double *h, double *small, double *full, double *prob) {
    const int M = 1 << N, K1 = N + 1;
    for (int b = 0; b < B; b++) {
        const int64_t tb = (int64_t)b * U * M, kb = (int64_t)b * W * K1;
        tables(U, N, normal, rates + (int64_t)b * U * N, expo + (int64_t)b * U,
               t0 + (int64_t)b * U, normal ? sd + (int64_t)b * U : 0, need, vb + tb, u + tb,
               g + tb, g1 + tb, h + tb);
        double *sm = small + kb, *fu = full + kb;
        const double *gb = g + tb, *hb = h + tb, *vbb = vb + tb;
        for (int64_t i = 0; i < (int64_t)W * K1; i++) sm[i] = fu[i] = 0.0;
        for (int64_t p = 0; p < P; p++) {
            sm[ik[p]] += sign[p] * gb[ib[p]];
            fu[ik[p]] += sign_full[p] * vbb[ia[p]] * hb[ib[p]];
        }
        for (int w = 0; w < W; w++) {
            const double *k = kp + kb + (int64_t)w * K1;
            const double *s = sm + (int64_t)w * K1, *f = fu + (int64_t)w * K1;
            double ge = 0.0, acc = 0.0;
            double gt[MAX_K1];
            for (int j = N; j >= 0; j--) { /* P(K > j) = P(K >= j + 1), clamped at 0 */
                gt[j] = ge > 0.0 ? ge : 0.0;
                ge += k[j];
            }
            for (int j = 0; j < K1; j++) acc += gt[j] * s[j] - k[j] * f[j];
            prob[(int64_t)b * W + w] = acc + k[0] * empty_ok[w];
        }
    }
}

void tva_race_backward(int B, int U, int W, int N, int64_t P, int normal, const double *kp,
                       const double *expo, const double *t0, const double *sd,
                       const int64_t *ib, const int64_t *ia, const int64_t *ik,
                       const double *sign, const double *sign_full, const double *empty_ok,
                       const uint8_t *need, const double *vb, const double *u, const double *g,
                       const double *g1, const double *h,
                       const double *small, const double *full, const double *grad_prob,
                       double *gs, double *gf, double *dvb, double *dg, double *dh,
                       double *grates, double *gkp, double *gexpo, double *gt0, double *gsd) {
    const int M = 1 << N, K1 = N + 1;
    for (int b = 0; b < B; b++) {
        const int64_t tb = (int64_t)b * U * M, kb = (int64_t)b * W * K1;
        /* the bins' gradients, and P(K)'s */
        for (int w = 0; w < W; w++) {
            const double go = grad_prob[(int64_t)b * W + w];
            const double *k = kp + kb + (int64_t)w * K1;
            const double *s = small + kb + (int64_t)w * K1, *f = full + kb + (int64_t)w * K1;
            double *gk = gkp + kb + (int64_t)w * K1;
            double ge = 0.0, gt[MAX_K1], pass[MAX_K1];
            for (int j = N; j >= 0; j--) {
                gt[j] = ge > 0.0 ? ge : 0.0;
                pass[j] = j < N && ge >= 0.0; /* clamp_min's gradient; P(K > N) is a constant */
                ge += k[j];
            }
            double below = 0.0; /* sum over j' < j of dL/dP(K > j') */
            for (int j = 0; j < K1; j++) {
                gs[(int64_t)w * K1 + j] = go * gt[j];
                gf[(int64_t)w * K1 + j] = -go * k[j];
                gk[j] = -go * f[j] + (j == 0 ? go * empty_ok[w] : 0.0) + below;
                below += pass[j] * go * s[j];
            }
        }
        for (int64_t i = 0; i < (int64_t)U * M; i++) dvb[i] = dg[i] = dh[i] = 0.0;
        const double *gb = g + tb, *g1b = g1 + tb, *hb = h + tb, *vbb = vb + tb, *ub = u + tb;
        for (int64_t p = 0; p < P; p++) {
            dg[ib[p]] += sign[p] * gs[ik[p]];
            const double t = sign_full[p] * gf[ik[p]];
            dvb[ia[p]] += t * hb[ib[p]];
            dh[ib[p]] += t * vbb[ia[p]];
        }
        for (int d = 0; d < U; d++) {
            const int64_t o = (int64_t)d * M;
            const int64_t bu = (int64_t)b * U + d;
            const double dd = expo[bu] - t0[bu];
            const double s = normal ? sd[bu] : 0.0;
            const double phi = normal ? INV_SQRT_2PI * exp(-0.5 * (dd / s) * (dd / s)) : 0.0;
            double gdd = 0.0, gss = 0.0, gV = 0.0;
            for (int c = 0; c < M; c++) {
                if (!need[o + c]) continue; /* no pair reads G_B or h_B: dL/dG_B = dL/dh_B = 0 */
                const double raw = ub[o + c], uu = raw > 0.0 ? raw : 0.0, gv = gb[o + c];
                double dgc = dg[o + c], du = 0.0;
                if (uu > 0.0) {
                    dgc -= dh[o + c] / uu;
                    du = -dh[o + c] * (1.0 - gv) / (uu * uu);
                } else {
                    dgc -= dh[o + c];
                }
                if (normal) {
                    const double e = g1b[o + c];
                    du += dgc * (e * (uu * s * s - dd) - s * phi);
                    gdd += dgc * (-uu * e);
                    gss += dgc * (uu * uu * s * e - uu * phi);
                } else {
                    du += dgc * (-(dd > 0.0 ? dd : 0.0) * gv);
                    if (dd >= 0.0) gdd += dgc * (-uu * gv);
                }
                if (raw >= 0.0) { /* u = clamp_min(V - v_B, 0) */
                    gV += du;
                    dvb[o + c] -= du;
                }
            }
            double *gr = grates + (int64_t)b * U * N + (int64_t)d * N;
            for (int x = 0; x < N; x++) {
                double acc = gV;
                for (int c = 0; c < M; c++)
                    if (c >> x & 1) acc += dvb[o + c];
                gr[x] = acc;
            }
            gexpo[bu] = gdd;
            gt0[bu] = -gdd;
            if (normal) gsd[bu] = gss;
        }
    }
}
