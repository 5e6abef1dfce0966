/* The two hot loops of decoding on a CPU, in C: what `cpu_kernels.py` builds and calls.

   Decoding one token multiplies one row x by every weight matrix once, so its speed is the speed of
   reading the weights; and each layer's new query looks at every cached key and value once.

   int8_rows: out[i, r] = scale[r] * sum_k w[r, k] * x[i, k], w: (rows, cols) int8, x: (m, cols).
   Each weight row is read once and multiplied with every x row while it is still in the cache: widened
   to float, or, where the CPU has AVX512-VNNI, to 16-bit integers against x rounded to 16 bits (below).
   Each x row's sums are computed in the same order whatever the number of rows, so a sequence gets the
   same numbers alone or among others.

   attend_one: softmax(q·K · scale) V for one query per slot and head (below).
*/
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>

/* 16 int8 weights as 16 floats. */
static inline __m512 widen(const int8_t *w) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)w)));
}

static float dot(const int8_t *w, const float *x, long cols) {
    /* Four sums side by side, so that each multiply-add need not wait for the one before. */
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    long k = 0;
    for (; k + 64 <= cols; k += 64) {
        s0 = _mm512_fmadd_ps(widen(w + k), _mm512_loadu_ps(x + k), s0);
        s1 = _mm512_fmadd_ps(widen(w + k + 16), _mm512_loadu_ps(x + k + 16), s1);
        s2 = _mm512_fmadd_ps(widen(w + k + 32), _mm512_loadu_ps(x + k + 32), s2);
        s3 = _mm512_fmadd_ps(widen(w + k + 48), _mm512_loadu_ps(x + k + 48), s3);
    }
    for (; k + 16 <= cols; k += 16)
        s0 = _mm512_fmadd_ps(widen(w + k), _mm512_loadu_ps(x + k), s0);
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; k < cols; k++)
        sum += (float)w[k] * x[k];
    return sum;
}

#else

/* Any other CPU: the compiler vectorises this loop for what it has (AVX2, NEON, ...). */
static float dot(const int8_t *w, const float *x, long cols) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (long k = 0; k < cols; k++)
        sum += (float)w[k] * x[k];
    return sum;
}

#endif

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define SIXTEEN_BIT_ROWS 1
/* With AVX512-VNNI, x is first rounded to 16-bit integers (one scale per row: 2^-15 of its largest
   value), and each 32 weights take two instructions: widen to 16 bits, multiply-add pairs into 32-bit
   sums. Twice as fast as widening to float (2,048 x 640: 27 against 56 us), 3e-5 from the exact product. */
static float dot16(const int8_t *w, const int16_t *x, long cols) {
    long long sum = 0;
    long k = 0;
    while (k + 64 <= cols) { /* chunks of 8,192: their 32-bit sums cannot overflow (127 x 32,767 x 256) */
        __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
        for (long end = k + 8192 < cols ? k + 8192 : cols; k + 64 <= end; k += 64) {
            s0 = _mm512_dpwssd_epi32(s0, _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(w + k))),
                                     _mm512_loadu_si512((const void *)(x + k)));
            s1 = _mm512_dpwssd_epi32(s1, _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(w + k + 32))),
                                     _mm512_loadu_si512((const void *)(x + k + 32)));
        }
        sum += (long long)_mm512_reduce_add_epi32(s0) + _mm512_reduce_add_epi32(s1);
    }
    for (; k < cols; k++)
        sum += (long long)w[k] * x[k];
    return (float)sum;
}
#endif

/* 1 where int8_rows rounds x to 16 bits (so that its plain twin can do the same), else 0. */
int rounds_to_16_bits(void) {
#ifdef SIXTEEN_BIT_ROWS
    return 1;
#else
    return 0;
#endif
}

void int8_rows(const int8_t *w, const float *scale, const float *x, float *out, long rows, long cols, long m, int threads) {
#ifdef SIXTEEN_BIT_ROWS
    int16_t *rounded = malloc(m * cols * sizeof(int16_t));
    float *step = malloc(m * sizeof(float)); /* what one unit of each rounded row is worth */
    for (long i = 0; i < m; i++) {
        float largest = 0.0f;
        for (long k = 0; k < cols; k++)
            largest = fabsf(x[i * cols + k]) > largest ? fabsf(x[i * cols + k]) : largest;
        step[i] = largest > 0.0f ? largest / 32767.0f : 1.0f;
        for (long k = 0; k < cols; k++)
            rounded[i * cols + k] = (int16_t)lrintf(x[i * cols + k] / step[i]);
    }
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long r = 0; r < rows; r++) {
        for (long i = 0; i < m; i++)
            out[i * rows + r] = dot16(w + r * cols, rounded + i * cols, cols) * step[i] * scale[r];
    }
    free(rounded);
    free(step);
#else
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long r = 0; r < rows; r++) {
        for (long i = 0; i < m; i++)
            out[i * rows + r] = dot(w + r * cols, x + i * cols, cols) * scale[r];
    }
#endif
}

/* Attention for one new token per slot, against that slot's cached keys and values (decoding).

   q: (slots, heads, d) float32; keys, values: (slots, kv_heads, size, d), float32 or bf16 (`bf16`);
   positions: (slots,); out: (slots, heads, d). Query head h reads key/value head h / (heads / kv_heads).
   Index i of a slot's cache is visible once the slot's position reached it (i <= position), which
   also holds for a sliding window's ring buffer: only those indices are read. */

/* Cached row i as floats: the row itself (float32), or widened into `row` (a bf16 is the top half of a float32). */
static const float *cached_row(const void *cache, int bf16, long i, long d, float *row) {
    if (!bf16)
        return (const float *)cache + i * d;
    const uint16_t *halves = (const uint16_t *)cache + i * d;
    for (long k = 0; k < d; k++) {
        uint32_t bits = (uint32_t)halves[k] << 16;
        memcpy(row + k, &bits, sizeof(float));
    }
    return row;
}

void attend_one(const float *q, const void *keys, const void *values, int bf16, const int64_t *positions, float *out,
                long slots, long heads, long kv_heads, long size, long d, float scale, int threads) {
    long groups = heads / kv_heads; /* the query heads that share one key/value head read each cached row once */
#pragma omp parallel num_threads(threads)
    {
        float *scores = malloc(groups * size * sizeof(float)), *row = malloc(d * sizeof(float));
#pragma omp for collapse(2) schedule(static)
        for (long s = 0; s < slots; s++) {
            for (long kv = 0; kv < kv_heads; kv++) {
                long first = (s * kv_heads + kv) * size; /* this key/value head's index 0 */
                long seen = positions[s] + 1 < size ? positions[s] + 1 : size;
                const float *query = q + (s * heads + kv * groups) * d; /* the group's first query head */
                float *mixed = out + (s * heads + kv * groups) * d;
                for (long i = 0; i < seen; i++) { /* every head's score for each key */
                    const float *key = cached_row(keys, bf16, first + i, d, row);
                    for (long g = 0; g < groups; g++) {
                        float score = 0.0f;
#pragma omp simd reduction(+ : score)
                        for (long k = 0; k < d; k++)
                            score += query[g * d + k] * key[k];
                        scores[g * size + i] = score * scale;
                    }
                }
                float largest[groups], total[groups];
                for (long g = 0; g < groups; g++) {
                    largest[g] = -INFINITY;
                    total[g] = 0.0f;
                    for (long i = 0; i < seen; i++)
                        largest[g] = scores[g * size + i] > largest[g] ? scores[g * size + i] : largest[g];
                    for (long k = 0; k < d; k++)
                        mixed[g * d + k] = 0.0f;
                }
                for (long i = 0; i < seen; i++) { /* softmax weights times values */
                    const float *value = cached_row(values, bf16, first + i, d, row);
                    for (long g = 0; g < groups; g++) {
                        float weight = expf(scores[g * size + i] - largest[g]);
                        total[g] += weight;
#pragma omp simd
                        for (long k = 0; k < d; k++)
                            mixed[g * d + k] += weight * value[k];
                    }
                }
                for (long g = 0; g < groups; g++)
                    for (long k = 0; k < d; k++)
                        mixed[g * d + k] /= total[g];
            }
        }
        free(scores);
        free(row);
    }
}
