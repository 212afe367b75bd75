/* culayers_engine_example_c: the engine example's step through the C API (culayers/culayers.h), for
 * engines written in C or calling through an FFI.
 *
 * One padded batch x (B, T, F) with per-sequence lengths, on the engine's own stream and buffers:
 * group normalization with masked statistics and a fused SiLU (channels last), dropout with a
 * device-resident state and a (B, 1, F) noise shape, masked mean pooling over time with int32 lengths,
 * then the dropout update op. Each op is validated (CanImplement) and sized (WorkspaceSize) first; one
 * workspace serves all of them. The results are checked against a host computation. Exit status 0 when
 * every check passed, 1 otherwise. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include <culayers/culayers.h>

#define BATCH 4
#define STEPS 6
#define FEATURES 8
#define GROUPS 2
#define ELEMENTS (BATCH * STEPS * FEATURES)
#define EPSILON 1e-3f
#define KEEP_RATE 0.75
#define SEED 99u

static const int32_t kLengths[BATCH] = {6, 3, 0, 9}; /* an empty sequence and one clamped to STEPS */
static int g_failures = 0;

static void check(int ok, const char* what, long index) {
  if (!ok) {
    ++g_failures;
    if (g_failures <= 10) {
      printf("  FAILED: %s (%ld)\n", what, index);
    }
  }
}

static int cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    ++g_failures;
    printf("  FAILED: %s: %s\n", what, cudaGetErrorString(e));
    return 0;
  }
  return 1;
}

static int status_ok(culayersStatus_t s, const char* what) {
  if (s != CULAYERS_STATUS_SUCCESS) {
    ++g_failures;
    printf("  FAILED: %s: %s: %s\n", what, culayersGetStatusString(s), culayersGetLastErrorMessage());
    return 0;
  }
  return 1;
}

static int clamped_length(int b) {
  return kLengths[b] < 0 ? 0 : (kLengths[b] > STEPS ? STEPS : kLengths[b]);
}

static int close_to(double got, double want, double atol, double rtol) {
  return fabs(got - want) <= atol + rtol * fabs(want);
}

/* The engine's device memory. */
struct Device {
  float* x;
  uint8_t* mask;
  int32_t* lengths;
  float* gamma;
  float* beta;
  float* normalized;
  float* dropped;
  culayersDropoutState_t* state;
  float* pooled;
  int32_t* counts;
  void* workspace;
};

static int run_step(struct Device* d, cudaStream_t cuda_stream) {
  const culayersStream_t stream = (culayersStream_t)cuda_stream;
  culayersGroupNormArgs_t norm;
  culayersDropoutInitArgs_t init;
  culayersDropoutForwardArgs_t drop;
  culayersMaskedReduceArgs_t pool;
  culayersDropoutUpdateArgs_t update;
  size_t sizes[5] = {0, 0, 0, 0, 0};
  size_t workspace_bytes = 0;
  int i;

  culayersGroupNormArgsInit(&norm);
  norm.dtype = CULAYERS_DTYPE_FLOAT32;
  norm.layout = CULAYERS_LAYOUT_CHANNELS_LAST;
  norm.x = d->x;
  norm.batch = BATCH;
  norm.channels = FEATURES;
  norm.spatial = STEPS;
  norm.groups = GROUPS;
  norm.epsilon = EPSILON;
  norm.gamma = d->gamma;
  norm.beta = d->beta;
  norm.activation = CULAYERS_ACTIVATION_SILU;
  norm.mask = d->mask;
  norm.y = d->normalized;

  culayersDropoutInitArgsInit(&init);
  init.state = d->state;
  init.seed = SEED;
  init.initial_keep_rate = KEEP_RATE;

  memset(&drop, 0, sizeof(drop));
  drop.x = d->normalized;
  drop.y = d->dropped;
  drop.dtype = CULAYERS_DTYPE_FLOAT32;
  drop.rank = 3;
  drop.dims[0] = BATCH;
  drop.dims[1] = STEPS;
  drop.dims[2] = FEATURES;
  drop.noise_rank = 3;
  drop.noise_dims[0] = BATCH;
  drop.noise_dims[1] = 1;
  drop.noise_dims[2] = FEATURES;
  drop.state = d->state;

  culayersMaskedReduceArgsInit(&pool);
  pool.op = CULAYERS_MASKED_REDUCE_MEAN;
  pool.dtype = CULAYERS_DTYPE_FLOAT32;
  pool.x = d->dropped;
  pool.outer = BATCH;
  pool.reduce = STEPS;
  pool.inner = FEATURES;
  pool.validity = CULAYERS_VALIDITY_LENGTHS;
  pool.lengths = d->lengths;
  pool.out = d->pooled;
  pool.counts = d->counts;

  update.state = d->state;

  if (!status_ok(culayersGroupNormCanImplement(&norm), "culayersGroupNormCanImplement") ||
      !status_ok(culayersDropoutInitCanImplement(&init), "culayersDropoutInitCanImplement") ||
      !status_ok(culayersDropoutForwardCanImplement(&drop), "culayersDropoutForwardCanImplement") ||
      !status_ok(culayersMaskedReduceCanImplement(&pool), "culayersMaskedReduceCanImplement") ||
      !status_ok(culayersDropoutUpdateCanImplement(&update), "culayersDropoutUpdateCanImplement")) {
    return 0;
  }
  if (!status_ok(culayersGroupNormWorkspaceSize(&norm, &sizes[0]), "culayersGroupNormWorkspaceSize") ||
      !status_ok(culayersMaskedReduceWorkspaceSize(&pool, &sizes[1]), "culayersMaskedReduceWorkspaceSize") ||
      !status_ok(culayersDropoutInitWorkspaceSize(&init, &sizes[2]), "culayersDropoutInitWorkspaceSize") ||
      !status_ok(culayersDropoutForwardWorkspaceSize(&drop, &sizes[3]),
                 "culayersDropoutForwardWorkspaceSize") ||
      !status_ok(culayersDropoutUpdateWorkspaceSize(&update, &sizes[4]),
                 "culayersDropoutUpdateWorkspaceSize")) {
    return 0;
  }
  for (i = 0; i < 5; ++i) {
    workspace_bytes = sizes[i] > workspace_bytes ? sizes[i] : workspace_bytes;
  }
  if (workspace_bytes > 0 && !cuda_ok(cudaMalloc(&d->workspace, workspace_bytes), "cudaMalloc workspace")) {
    return 0;
  }
  printf("workspace: %lu bytes (group norm %lu, masked mean %lu)\n", (unsigned long)workspace_bytes,
         (unsigned long)sizes[0], (unsigned long)sizes[1]);

  return status_ok(culayersDropoutInit(&init, d->workspace, workspace_bytes, stream),
                   "culayersDropoutInit") &&
         status_ok(culayersGroupNorm(&norm, d->workspace, workspace_bytes, stream), "culayersGroupNorm") &&
         status_ok(culayersDropoutForward(&drop, d->workspace, workspace_bytes, stream),
                   "culayersDropoutForward") &&
         status_ok(culayersMaskedReduce(&pool, d->workspace, workspace_bytes, stream),
                   "culayersMaskedReduce") &&
         status_ok(culayersDropoutUpdate(&update, d->workspace, workspace_bytes, stream),
                   "culayersDropoutUpdate");
}

static void check_results(const float* x, const uint8_t* mask, const float* gamma, const float* beta,
                          const float* normalized, const float* dropped, const float* pooled,
                          const int32_t* counts, const culayersDropoutState_t* state) {
  const int cpg = FEATURES / GROUPS;
  uint32_t draws[BATCH * FEATURES];
  const uint64_t threshold = (uint64_t)floor(KEEP_RATE * 4294967296.0 + 0.5);
  int b, g, t, c;

  /* Group normalization + SiLU (statistics over valid steps, in double; 1e-4 covers float32
   * accumulation and the GPU's exp). */
  for (b = 0; b < BATCH; ++b) {
    for (g = 0; g < GROUPS; ++g) {
      double sum = 0.0, sq = 0.0, n = 0.0, mu, r;
      for (t = 0; t < STEPS; ++t) {
        for (c = g * cpg; c < (g + 1) * cpg && mask[b * STEPS + t]; ++c) {
          sum += x[(b * STEPS + t) * FEATURES + c];
          n += 1.0;
        }
      }
      mu = n > 0 ? sum / n : 0.0;
      for (t = 0; t < STEPS; ++t) {
        for (c = g * cpg; c < (g + 1) * cpg && mask[b * STEPS + t]; ++c) {
          const double dx = x[(b * STEPS + t) * FEATURES + c] - mu;
          sq += dx * dx;
        }
      }
      r = 1.0 / sqrt((n > 0 ? sq / n : 0.0) + EPSILON);
      for (t = 0; t < STEPS; ++t) {
        for (c = g * cpg; c < (g + 1) * cpg; ++c) {
          const long i = (long)(b * STEPS + t) * FEATURES + c;
          const double pre = (x[i] - mu) * r * gamma[c] + beta[c];
          check(close_to(normalized[i], pre / (1.0 + exp(-pre)), 1e-4, 1e-4), "group norm output", i);
        }
      }
    }
  }

  /* Dropout: keep iff draw < threshold (Philox stream 0 of the seed), kept values x * scale exactly. */
  check(state->last_iteration == 0 && state->iterations == 1 && state->last_threshold == threshold,
        "dropout state", 0);
  culayersDropoutPhiloxDraws(SEED, 0, state->offset, BATCH * FEATURES, draws);
  for (b = 0; b < BATCH; ++b) {
    for (t = 0; t < STEPS; ++t) {
      for (c = 0; c < FEATURES; ++c) {
        const long i = (long)(b * STEPS + t) * FEATURES + c;
        const float want = draws[b * FEATURES + c] < threshold ? normalized[i] * state->last_scale : 0.0f;
        check(memcmp(&dropped[i], &want, sizeof(float)) == 0, "dropout output", i);
      }
    }
  }

  /* Masked mean over the first clamp(length, 0, T) steps; 0 for the empty sequence. */
  for (b = 0; b < BATCH; ++b) {
    const int len = clamped_length(b);
    check(counts[b] == len, "count", b);
    printf("  sequence %d (length %d, %d valid):", b, kLengths[b], counts[b]);
    for (c = 0; c < FEATURES; ++c) {
      double sum = 0.0;
      for (t = 0; t < len; ++t) {
        sum += dropped[(b * STEPS + t) * FEATURES + c];
      }
      check(close_to(pooled[b * FEATURES + c], len > 0 ? sum / len : 0.0, 1e-5, 1e-5), "pooled",
            b * FEATURES + c);
      printf(" %7.4f", (double)pooled[b * FEATURES + c]);
    }
    printf("\n");
  }
}

int main(void) {
  static float x[ELEMENTS], normalized[ELEMENTS], dropped[ELEMENTS], pooled[BATCH * FEATURES];
  static uint8_t mask[BATCH * STEPS];
  float gamma[FEATURES], beta[FEATURES];
  int32_t counts[BATCH];
  culayersDropoutState_t state;
  struct Device d;
  void** buffers[] = {(void**)&d.x,      (void**)&d.mask,       (void**)&d.lengths, (void**)&d.gamma,
                      (void**)&d.beta,   (void**)&d.normalized, (void**)&d.dropped, (void**)&d.state,
                      (void**)&d.pooled, (void**)&d.counts};
  const size_t bytes[] = {sizeof(x), sizeof(mask), sizeof(kLengths), sizeof(gamma),  sizeof(beta),
                          sizeof(x), sizeof(x),    sizeof(state),    sizeof(pooled), sizeof(counts)};
  const int n_buffers = (int)(sizeof(bytes) / sizeof(bytes[0]));
  cudaStream_t stream = NULL;
  uint64_t lcg = 12345u;
  int i, ok = 1;

  printf("culayers %s engine example (C API)\n", culayersGetVersionString());
  for (i = 0; i < ELEMENTS; ++i) {
    const int b = i / (STEPS * FEATURES), t = (i / FEATURES) % STEPS;
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    /* Padded steps hold large values that must not reach the statistics or the pooled means. */
    x[i] = t < clamped_length(b) ? (float)((double)(lcg >> 40) / 16777216.0 * 4.0 - 2.0) : 1e3f;
  }
  for (i = 0; i < BATCH * STEPS; ++i) {
    mask[i] = (uint8_t)((i % STEPS) < clamped_length(i / STEPS));
  }
  for (i = 0; i < FEATURES; ++i) {
    gamma[i] = 0.5f + 0.125f * (float)i;
    beta[i] = 0.25f * (float)(i % 3) - 0.25f;
  }

  memset(&d, 0, sizeof(d));
  if (!cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags")) {
    return 1;
  }
  for (i = 0; i < n_buffers && ok; ++i) {
    ok = cuda_ok(cudaMalloc(buffers[i], bytes[i]), "cudaMalloc");
  }
  ok = ok && cuda_ok(cudaMemcpyAsync(d.x, x, sizeof(x), cudaMemcpyHostToDevice, stream), "upload x") &&
       cuda_ok(cudaMemcpyAsync(d.mask, mask, sizeof(mask), cudaMemcpyHostToDevice, stream), "upload mask") &&
       cuda_ok(cudaMemcpyAsync(d.lengths, kLengths, sizeof(kLengths), cudaMemcpyHostToDevice, stream),
               "upload lengths") &&
       cuda_ok(cudaMemcpyAsync(d.gamma, gamma, sizeof(gamma), cudaMemcpyHostToDevice, stream),
               "upload gamma") &&
       cuda_ok(cudaMemcpyAsync(d.beta, beta, sizeof(beta), cudaMemcpyHostToDevice, stream), "upload beta");
  ok = ok && run_step(&d, stream);
  ok = ok &&
       cuda_ok(cudaMemcpyAsync(normalized, d.normalized, sizeof(x), cudaMemcpyDeviceToHost, stream),
               "download") &&
       cuda_ok(cudaMemcpyAsync(dropped, d.dropped, sizeof(x), cudaMemcpyDeviceToHost, stream), "download") &&
       cuda_ok(cudaMemcpyAsync(pooled, d.pooled, sizeof(pooled), cudaMemcpyDeviceToHost, stream),
               "download") &&
       cuda_ok(cudaMemcpyAsync(counts, d.counts, sizeof(counts), cudaMemcpyDeviceToHost, stream),
               "download") &&
       cuda_ok(cudaMemcpyAsync(&state, d.state, sizeof(state), cudaMemcpyDeviceToHost, stream), "download") &&
       cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  if (ok) {
    check_results(x, mask, gamma, beta, normalized, dropped, pooled, counts, &state);
  }

  for (i = 0; i < n_buffers; ++i) {
    (void)cudaFree(*buffers[i]);
  }
  (void)cudaFree(d.workspace);
  (void)cudaStreamDestroy(stream);
  printf(g_failures == 0 ? "engine example (C API): OK\n" : "engine example (C API): FAILED\n");
  return g_failures == 0 ? 0 : 1;
}
