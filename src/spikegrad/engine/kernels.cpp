// CPU kernels of the fast engine; the equations are in spikegrad/engine/__init__.py.
//
// Registered as torch operators `torch.ops.spikegrad_engine.*`. Each kernel is a plain
// loop over contiguous memory, parallel over the batch: every thread runs its own time
// loop, so a call opens one parallel region, not one per time step.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <atomic>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

namespace {

using at::Tensor;

int64_t n_chunks(int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
}

// Run f(chunk, begin, end) on `chunks` contiguous slices of [0, n), one task per chunk.
template <typename F>
void for_chunks(int64_t n, int64_t chunks, const F& f) {
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) f(c, n * c / chunks, n * (c + 1) / chunks);
  });
}

// Call f with `flag` as a compile-time constant (std::true_type / std::false_type).
template <typename F>
void with_flag(bool flag, const F& f) {
  if (flag) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

// A growable array of a trivial type whose spare capacity is left uninitialised, so that
// a kernel can write past its end before it knows how many entries to keep.
template <typename T>
class Buffer {
 public:
  size_t size() const { return size_; }
  T* data() { return data_.get(); }
  const T* begin() const { return data_.get(); }
  const T* end() const { return data_.get() + size_; }
  const T& operator[](size_t i) const { return data_[i]; }
  void push_back(T value) {
    if (size_ == capacity_) reserve_extra(1);
    data_[size_++] = value;
  }
  // Room for `extra` entries past the end.
  void reserve_extra(size_t extra) {
    if (size_ + extra <= capacity_) return;
    const size_t capacity = std::max<size_t>({size_ + extra, 2 * capacity_, 1024});
    std::unique_ptr<T[]> data(new T[capacity]);
    std::copy(begin(), end(), data.get());
    data_ = std::move(data);
    capacity_ = capacity;
  }
  void set_size(size_t size) { size_ = size; }

 private:
  std::unique_ptr<T[]> data_;
  size_t size_ = 0, capacity_ = 0;
};

// Builds a CSR matrix from rows visited in order within each of `chunks` row slices.
template <typename scalar_t>
struct CsrBuilder {
  std::vector<Buffer<int32_t>> cols;
  std::vector<Buffer<scalar_t>> vals;
  Tensor row_ptr;  // [R + 1]; row_ptr[r + 1] holds the count of row r until finish()

  CsrBuilder(int64_t rows, int64_t chunks, const at::TensorOptions& options)
      : cols(chunks), vals(chunks), row_ptr(at::zeros({rows + 1}, options.dtype(at::kLong))) {}

  void push(int64_t chunk, int32_t col, scalar_t val) {
    cols[chunk].push_back(col);
    vals[chunk].push_back(val);
  }

  std::vector<Tensor> finish(const at::TensorOptions& options) {
    int64_t* rp = row_ptr.data_ptr<int64_t>();
    const int64_t R = row_ptr.size(0) - 1;
    for (int64_t r = 0; r < R; ++r) rp[r + 1] += rp[r];
    Tensor col_t = at::empty({rp[R]}, options.dtype(at::kInt));
    Tensor val_t = at::empty({rp[R]}, options);
    int64_t offset = 0;
    for (size_t c = 0; c < cols.size(); ++c) {
      std::copy(cols[c].begin(), cols[c].end(), col_t.data_ptr<int32_t>() + offset);
      std::copy(vals[c].begin(), vals[c].end(), val_t.data_ptr<scalar_t>() + offset);
      offset += static_cast<int64_t>(cols[c].size());
    }
    return {row_ptr, col_t, val_t};
  }
};

// True when one of row[0..n) is non-zero (a branch-free test the compiler vectorises).
template <typename scalar_t>
inline bool any_nonzero(const scalar_t* row, int64_t n) {
  bool any = false;
  for (int64_t k = 0; k < n; ++k) any |= row[k] != 0;
  return any;
}

// Bit j set when p[j] != 0, for j < 32 (NaN counts as non-zero, -0 as zero, as with !=).
template <typename scalar_t>
inline uint32_t nonzero_mask32(const scalar_t* p) {
  uint32_t mask = 0;
  for (int j = 0; j < 32; ++j) mask |= uint32_t(p[j] != 0) << j;
  return mask;
}

#if defined(__AVX512F__)
template <>
inline uint32_t nonzero_mask32<float>(const float* p) {
  const __m512 zero = _mm512_setzero_ps();
  const uint32_t lo = _mm512_cmp_ps_mask(_mm512_loadu_ps(p), zero, _CMP_NEQ_UQ);
  const uint32_t hi = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + 16), zero, _CMP_NEQ_UQ);
  return lo | (hi << 16);
}
#elif defined(__AVX2__)
template <>
inline uint32_t nonzero_mask32<float>(const float* p) {
  const __m256 zero = _mm256_setzero_ps();
  uint32_t mask = 0;
  for (int j = 0; j < 4; ++j) {
    const __m256 ne = _mm256_cmp_ps(_mm256_loadu_ps(p + 8 * j), zero, _CMP_NEQ_UQ);
    mask |= uint32_t(_mm256_movemask_ps(ne)) << (8 * j);
  }
  return mask;
}
#endif

// Appends the column indices and values of the non-zeros of row[0..C) to cols, vals.
template <typename scalar_t>
inline void append_nonzeros(const scalar_t* row, int64_t C, Buffer<int32_t>& cols,
                            Buffer<scalar_t>& vals) {
  int64_t k0 = 0;
  for (; k0 + 32 <= C; k0 += 32) {  // a bit mask of the non-zeros of 32 entries
    for (uint32_t mask = nonzero_mask32(row + k0); mask != 0; mask &= mask - 1) {
      const int64_t k = k0 + __builtin_ctz(mask);
      cols.push_back(static_cast<int32_t>(k));
      vals.push_back(row[k]);
    }
  }
  for (int64_t k = k0; k < C; ++k) {
    if (row[k] != 0) {
      cols.push_back(static_cast<int32_t>(k));
      vals.push_back(row[k]);
    }
  }
}

#if defined(__AVX512F__)
// Branch-free: each block of 16 entries stores its non-zeros compressed to the front of a
// full vector at the end of the buffers, then advances the end by their count.
template <>
inline void append_nonzeros<float>(const float* row, int64_t C, Buffer<int32_t>& cols,
                                   Buffer<float>& vals) {
  cols.reserve_extra(size_t(C) + 16);
  vals.reserve_extra(size_t(C) + 16);
  int32_t* ci = cols.data() + cols.size();
  float* vi = vals.data() + vals.size();
  const __m512 zero = _mm512_setzero_ps();
  const __m512i step = _mm512_set1_epi32(16);
  __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  size_t m = 0;
  int64_t k = 0;
  for (; k + 16 <= C; k += 16, idx = _mm512_add_epi32(idx, step)) {
    const __m512 a = _mm512_loadu_ps(row + k);
    const __mmask16 nz = _mm512_cmp_ps_mask(a, zero, _CMP_NEQ_UQ);
    _mm512_storeu_si512(reinterpret_cast<void*>(ci + m), _mm512_maskz_compress_epi32(nz, idx));
    _mm512_storeu_ps(vi + m, _mm512_maskz_compress_ps(nz, a));
    m += static_cast<size_t>(__builtin_popcount(static_cast<unsigned>(nz)));
  }
  for (; k < C; ++k) {
    ci[m] = static_cast<int32_t>(k);
    vi[m] = row[k];
    m += row[k] != 0 ? 1 : 0;
  }
  cols.set_size(cols.size() + m);
  vals.set_size(vals.size() + m);
}
#endif

// CSR form [row_ptr (R + 1), cols (nnz), vals (nnz)] of the non-zeros of a dense [R, C]
// matrix; an empty list when some slice of rows has more than `max_density` non-zeros.
std::vector<Tensor> to_sparse(const Tensor& x, double max_density) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "to_sparse: contiguous 2-d input expected");
  const int64_t R = x.size(0), C = x.size(1), chunks = n_chunks(R);
  std::vector<Tensor> result;
  std::atomic<bool> too_dense{false};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "to_sparse", [&] {
    CsrBuilder<scalar_t> csr(R, chunks, x.options());
    const scalar_t* xp = x.data_ptr<scalar_t>();
    int64_t* rp = csr.row_ptr.data_ptr<int64_t>();
    for_chunks(R, chunks, [&](int64_t c, int64_t r0, int64_t r1) {
      const auto limit = static_cast<size_t>(max_density * double((r1 - r0) * C)) + 1;
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* row = xp + r * C;
        const size_t before = csr.cols[c].size();
        append_nonzeros(row, C, csr.cols[c], csr.vals[c]);
        rp[r + 1] = static_cast<int64_t>(csr.cols[c].size() - before);
        if (csr.cols[c].size() > limit || too_dense.load(std::memory_order_relaxed)) {
          too_dense = true;
          return;
        }
      }
    });
    if (!too_dense) result = csr.finish(x.options());
  });
  return result;
}

// out[r, :] = Σ_e vals[e] wt[cols[e], :] over the non-zeros e of row r: the CSR matrix
// [R, C] times the dense wt [C, N].
Tensor sparse_mm(const Tensor& row_ptr, const Tensor& cols, const Tensor& vals,
                 const Tensor& wt) {
  TORCH_CHECK(wt.dim() == 2 && wt.is_contiguous(), "sparse_mm: contiguous weight expected");
  const int64_t R = row_ptr.size(0) - 1, N = wt.size(1);
  Tensor out = at::empty({R, N}, wt.options());
  AT_DISPATCH_FLOATING_TYPES(wt.scalar_type(), "sparse_mm", [&] {
    const int64_t* rp = row_ptr.data_ptr<int64_t>();
    const int32_t* cp = cols.data_ptr<int32_t>();
    const scalar_t* vp = vals.data_ptr<scalar_t>();
    const scalar_t* w = wt.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, R, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        scalar_t* orow = o + r * N;
        std::fill_n(orow, N, scalar_t(0));
        for (int64_t e = rp[r]; e < rp[r + 1]; ++e) {
          const scalar_t v = vp[e];
          const scalar_t* wrow = w + int64_t(cp[e]) * N;
          for (int64_t k = 0; k < N; ++k) orow[k] += v * wrow[k];
        }
      }
    });
  });
  return out;
}

// out [C, N] = (CSR [R, C])^T g [R, N]: the weight gradient Σ_r x[r]^T g[r] that only
// visits the non-zeros of x. Each chunk of rows sums into its own buffer.
Tensor sparse_tmm(const Tensor& row_ptr, const Tensor& cols, const Tensor& vals,
                  const Tensor& g, int64_t C) {
  TORCH_CHECK(g.dim() == 2 && g.is_contiguous(), "sparse_tmm: contiguous gradient expected");
  const int64_t R = row_ptr.size(0) - 1, N = g.size(1), chunks = n_chunks(R);
  Tensor parts = at::zeros({chunks, C, N}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "sparse_tmm", [&] {
    const int64_t* rp = row_ptr.data_ptr<int64_t>();
    const int32_t* cp = cols.data_ptr<int32_t>();
    const scalar_t* vp = vals.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* pp = parts.data_ptr<scalar_t>();
    for_chunks(R, chunks, [&](int64_t c, int64_t r0, int64_t r1) {
      scalar_t* part = pp + c * C * N;
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* grow = gp + r * N;
        for (int64_t e = rp[r]; e < rp[r + 1]; ++e) {
          const scalar_t v = vp[e];
          scalar_t* prow = part + int64_t(cp[e]) * N;
          for (int64_t k = 0; k < N; ++k) prow[k] += v * grow[k];
        }
      }
    });
  });
  return chunks == 1 ? parts[0] : parts.sum(0);
}

// One step of one batch entry: S = Θ(U - 1), P = β_m U + (1 - β_m) I, U <- P (1 - S),
// I <- β_s I + x (the recurrent input is added by the caller); records U, S (and P).
template <bool keep, typename scalar_t>
inline void forward_row(int64_t N, scalar_t bm, scalar_t obm, scalar_t bs,
                        scalar_t* __restrict__ u, scalar_t* __restrict__ i,
                        const scalar_t* __restrict__ x, scalar_t* __restrict__ ur,
                        scalar_t* __restrict__ sr, scalar_t* __restrict__ pr) {
  const scalar_t one = 1;
  for (int64_t k = 0; k < N; ++k) {
    const scalar_t uk = u[k], s = uk > one ? one : scalar_t(0);
    const scalar_t p = bm * uk + obm * i[k];
    ur[k] = uk;
    sr[k] = s;
    if constexpr (keep) pr[k] = p;
    u[k] = p * (one - s);
    i[k] = bs * i[k] + x[k];
  }
}

// Forward time loop of a LIF layer from the projected input x [B, T, N] (x[n] = W S_in[n]).
// Returns S[0..T-1], U[0..T-1], P[n] = β_m U[n] + (1 - β_m) I[n] (with keep_pre_reset, else
// empty) and the CSR form of S as [B*T, N] (row_ptr, cols, vals). vt is V^T [N, N]
// (contiguous) or an empty tensor for a feed-forward layer.
std::vector<Tensor> lif_forward(const Tensor& x, const Tensor& vt, double beta_mem,
                                double one_minus_beta_mem, double beta_syn,
                                bool keep_pre_reset) {
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous(), "lif_forward: contiguous [B, T, N] expected");
  const int64_t B = x.size(0), T = x.size(1), N = x.size(2), chunks = n_chunks(B);
  const bool recurrent = vt.numel() > 0;
  Tensor S = at::empty_like(x), U = at::empty_like(x);
  Tensor P = keep_pre_reset ? at::empty_like(x) : at::empty({0}, x.options());
  std::vector<Tensor> sparse;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_forward", [&] {
    const scalar_t bm = scalar_t(beta_mem), obm = scalar_t(one_minus_beta_mem);
    const scalar_t bs = scalar_t(beta_syn), one = 1;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* v = recurrent ? vt.data_ptr<scalar_t>() : nullptr;
    scalar_t *sp = S.data_ptr<scalar_t>(), *up = U.data_ptr<scalar_t>();
    scalar_t* pp = keep_pre_reset ? P.data_ptr<scalar_t>() : nullptr;
    CsrBuilder<scalar_t> csr(B * T, chunks, x.options());
    int64_t* rp = csr.row_ptr.data_ptr<int64_t>();
    for_chunks(B, chunks, [&](int64_t c, int64_t b0, int64_t b1) {
      std::vector<scalar_t> u(N), i(N);
      for (int64_t b = b0; b < b1; ++b) {
        std::fill(u.begin(), u.end(), scalar_t(0));
        std::fill(i.begin(), i.end(), scalar_t(0));
        for (int64_t n = 0; n < T; ++n) {
          const int64_t off = (b * T + n) * N;
          const scalar_t* xr = xp + off;
          scalar_t *sr = sp + off, *ur = up + off;
          with_flag(pp != nullptr, [&](auto keep) {
            forward_row<keep.value>(N, bm, obm, bs, u.data(), i.data(), xr, ur, sr,
                                    keep.value ? pp + off : nullptr);
          });
          const size_t before = csr.cols[c].size();
          if (any_nonzero(sr, N)) {
            for (int64_t k = 0; k < N; ++k) {
              if (sr[k] != 0) csr.push(c, static_cast<int32_t>(k), one);
            }
          }
          rp[b * T + n + 1] = static_cast<int64_t>(csr.cols[c].size() - before);
          if (!recurrent) continue;
          for (size_t e = before; e < csr.cols[c].size(); ++e) {
            const scalar_t* vr = v + int64_t(csr.cols[c][e]) * N;
            for (int64_t k = 0; k < N; ++k) i[k] += vr[k];
          }
        }
      }
    });
    sparse = csr.finish(x.options());
  });
  return {S, U, P, sparse[0], sparse[1], sparse[2]};
}

// The built-in surrogates σ'(x) = scale * natural(x, slope) of spikegrad.surrogates, by
// index (0: none, the caller passes σ' evaluated by PyTorch instead).
enum Shape { GIVEN = 0, SUPERSPIKE, SIGMOID, ESSER, SUPERSPIKE_ASYMPTOTIC, EXPONENTIAL, ARCTAN,
             GAUSSIAN, TRUE_GRADIENT, CONSTANT };

template <int64_t shape, typename scalar_t>
inline scalar_t surrogate(scalar_t x, scalar_t slope, scalar_t scale) {
  const scalar_t one = 1, ax = std::abs(x);
  if constexpr (shape == SUPERSPIKE) {
    return scale * (one / ((slope * ax + one) * (slope * ax + one)));
  } else if constexpr (shape == SIGMOID) {
    const scalar_t sig = one / (one + std::exp(-slope * x));
    return scale * (sig * (one - sig));
  } else if constexpr (shape == ESSER) {
    return scale * std::max(one - slope * ax, scalar_t(0));
  } else if constexpr (shape == SUPERSPIKE_ASYMPTOTIC) {
    return scale * (slope / ((slope * ax + one) * (slope * ax + one)));
  } else if constexpr (shape == EXPONENTIAL) {
    return scale * std::exp(-slope * ax);
  } else if constexpr (shape == ARCTAN) {
    const scalar_t z = scalar_t(0.5 * 3.14159265358979323846) * slope * x;
    return scale * (one / (one + z * z));
  } else if constexpr (shape == GAUSSIAN) {
    return scale * std::exp(scalar_t(-0.5) * (slope * x) * (slope * x));
  } else if constexpr (shape == TRUE_GRADIENT) {
    return 0;
  } else {
    return scale;  // CONSTANT
  }
}

// Call f with the surrogate shape as a compile-time constant.
template <typename F>
void with_shape(int64_t shape, const F& f) {
  switch (shape) {
    case GIVEN: return f(std::integral_constant<int64_t, GIVEN>{});
    case SUPERSPIKE: return f(std::integral_constant<int64_t, SUPERSPIKE>{});
    case SIGMOID: return f(std::integral_constant<int64_t, SIGMOID>{});
    case ESSER: return f(std::integral_constant<int64_t, ESSER>{});
    case SUPERSPIKE_ASYMPTOTIC: return f(std::integral_constant<int64_t, SUPERSPIKE_ASYMPTOTIC>{});
    case EXPONENTIAL: return f(std::integral_constant<int64_t, EXPONENTIAL>{});
    case ARCTAN: return f(std::integral_constant<int64_t, ARCTAN>{});
    case GAUSSIAN: return f(std::integral_constant<int64_t, GAUSSIAN>{});
    case TRUE_GRADIENT: return f(std::integral_constant<int64_t, TRUE_GRADIENT>{});
    default: return f(std::integral_constant<int64_t, CONSTANT>{});
  }
}

template <int64_t shape, typename scalar_t>
inline void surrogate_row(int64_t N, const scalar_t* __restrict__ u, scalar_t* __restrict__ out,
                          scalar_t slope, scalar_t scale) {
  for (int64_t k = 0; k < N; ++k) out[k] = surrogate<shape>(u[k] - scalar_t(1), slope, scale);
}

// One step of the adjoint recursion for one batch entry (see lif_backward).
template <bool rec, bool reset, typename scalar_t>
inline void backward_row(int64_t N, scalar_t bm, scalar_t obm, scalar_t bs,
                         const scalar_t* __restrict__ grad, const scalar_t* __restrict__ r,
                         const scalar_t* __restrict__ p, const scalar_t* __restrict__ s,
                         const scalar_t* __restrict__ sg, scalar_t* __restrict__ du,
                         scalar_t* __restrict__ di) {
  const scalar_t one = 1;
  for (int64_t k = 0; k < N; ++k) {
    scalar_t g = grad[k];
    if constexpr (rec) g += r[k];
    if constexpr (reset) g -= du[k] * p[k];
    const scalar_t a = du[k] * (one - s[k]);
    du[k] = bm * a + g * sg[k];
    di[k] = obm * a + bs * di[k];
  }
}

// BPTT of a LIF layer over the steps [t0, t1) (called for consecutive blocks, latest first):
// from dL/dS (grad [B, T, N]) to dL/dx (dx [B, T, N], dx[n] = dI[n+1]), carrying the
// adjoints du = dU[t1], di = dI[t1] ([B, N], updated in place to dU[t0], dI[t0]).
// sg = σ'(U - 1) of the block [B, t1 - t0, N] when shape is GIVEN, else u = U [B, T, N] and
// σ' is the built-in surrogate `shape` (slope, scale); p is the pre-reset membrane for a
// differentiable reset (else empty); v = V [N, N] when gradients flow through the
// recurrence (else empty). Backwards in time:
//   g     = dS[n] + dI[n+1] V - dU[n+1] P[n]     (recurrence / reset terms when enabled)
//   a     = dU[n+1] (1 - S[n])
//   dU[n] = β_m a + g σ'[n],   dI[n] = (1 - β_m) a + β_s dI[n+1]
void lif_backward(const Tensor& grad, const Tensor& s, const Tensor& sg, const Tensor& u,
                  int64_t shape, double slope, double scale, const Tensor& p, const Tensor& v,
                  Tensor du, Tensor di, Tensor dx, int64_t t0, int64_t t1, double beta_mem,
                  double one_minus_beta_mem, double beta_syn) {
  TORCH_CHECK(grad.is_contiguous() && s.is_contiguous() && sg.is_contiguous() &&
                  du.is_contiguous() && di.is_contiguous() && dx.is_contiguous(),
              "lif_backward: contiguous tensors expected");
  const int64_t B = grad.size(0), T = grad.size(1), N = grad.size(2), L = t1 - t0;
  const int64_t chunks = n_chunks(B);
  const bool reset_grad = p.numel() > 0, recurrent = v.numel() > 0;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "lif_backward", [&] {
    const scalar_t bm = scalar_t(beta_mem), obm = scalar_t(one_minus_beta_mem);
    const scalar_t bs = scalar_t(beta_syn), one = 1;
    const scalar_t *gp = grad.data_ptr<scalar_t>(), *spk = s.data_ptr<scalar_t>();
    const scalar_t* sgp = shape == GIVEN ? sg.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ump = shape == GIVEN ? nullptr : u.data_ptr<scalar_t>();
    const scalar_t slope_ = scalar_t(slope), scale_ = scalar_t(scale);
    const scalar_t* pp = reset_grad ? p.data_ptr<scalar_t>() : nullptr;
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    for_chunks(B, chunks, [&](int64_t, int64_t b0, int64_t b1) {
      std::vector<scalar_t> sgbuf(N);
      const int64_t nb = b1 - b0;
      Tensor du_c = du.narrow(0, b0, nb), di_c = di.narrow(0, b0, nb);
      Tensor rec = recurrent ? at::empty({nb, N}, grad.options()) : Tensor();
      scalar_t *dup = du_c.data_ptr<scalar_t>(), *dip = di_c.data_ptr<scalar_t>();
      for (int64_t n = t1 - 1; n >= t0; --n) {
        if (n > t0) {  // rows of one step lie T * N apart: prefetch the next (earlier) step
          for (int64_t b = b0; b < b1; ++b) {
            const int64_t off = (b * T + n - 1) * N;
            for (int64_t k = 0; k < N; k += 64 / int64_t(sizeof(scalar_t))) {
              __builtin_prefetch(gp + off + k);
              __builtin_prefetch(spk + off + k);
              __builtin_prefetch(dxp + off + k, 1);
              if (ump) __builtin_prefetch(ump + off + k);
              if (pp) __builtin_prefetch(pp + off + k);
            }
          }
        }
        if (recurrent) at::mm_out(rec, di_c, v);
        const scalar_t* rp = recurrent ? rec.data_ptr<scalar_t>() : nullptr;
        for (int64_t b = 0; b < nb; ++b) {
          const int64_t off = ((b0 + b) * T + n) * N;
          const scalar_t* sgr = sgbuf.data();
          scalar_t *dur = dup + b * N, *dir = dip + b * N;
          std::copy_n(dir, N, dxp + off);
          with_shape(shape, [&](auto sh) {
            with_flag(rp != nullptr, [&](auto rec_term) {
              with_flag(pp != nullptr, [&](auto reset_term) {
                if constexpr (sh.value == GIVEN) {
                  sgr = sgp + ((b0 + b) * L + (n - t0)) * N;
                } else {
                  surrogate_row<sh.value>(N, ump + off, sgbuf.data(), slope_, scale_);
                }
                backward_row<rec_term.value, reset_term.value>(
                    N, bm, obm, bs, gp + off, rp ? rp + b * N : nullptr,
                    pp ? pp + off : nullptr, spk + off, sgr, dur, dir);
              });
            });
          });
        }
      }
    });
  });
}

// 1 + the last step n at which grad [B, T, N] is non-zero for some batch entry (0 if none);
// scans backwards and stops at the first non-zero.
int64_t last_active_step(const Tensor& grad) {
  TORCH_CHECK(grad.dim() == 3 && grad.is_contiguous(), "last_active_step: contiguous input");
  const int64_t B = grad.size(0), T = grad.size(1), N = grad.size(2);
  int64_t last = 0;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "last_active_step", [&] {
    const scalar_t* gp = grad.data_ptr<scalar_t>();
    for (int64_t n = T - 1; n >= 0 && last == 0; --n) {
      for (int64_t b = 0; b < B && last == 0; ++b) {
        if (any_nonzero(gp + (b * T + n) * N, N)) last = n + 1;
      }
    }
  });
  return last;
}

// The leaky readout as a linear filter of x [B, T, K]; returns U[1..T]:
//   U[n+1] = β_m U[n] + (1 - β_m) I[n],   I[n+1] = β_s I[n] + x[n].
Tensor leaky_filter(const Tensor& x, double beta_mem, double one_minus_beta_mem,
                    double beta_syn) {
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous(), "leaky_filter: contiguous [B, T, K] expected");
  const int64_t B = x.size(0), T = x.size(1), K = x.size(2);
  Tensor y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "leaky_filter", [&] {
    const scalar_t bm = scalar_t(beta_mem), obm = scalar_t(one_minus_beta_mem);
    const scalar_t bs = scalar_t(beta_syn);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> u(K), i(K);
      for (int64_t b = b0; b < b1; ++b) {
        std::fill(u.begin(), u.end(), scalar_t(0));
        std::fill(i.begin(), i.end(), scalar_t(0));
        for (int64_t n = 0; n < T; ++n) {
          const int64_t off = (b * T + n) * K;
          for (int64_t k = 0; k < K; ++k) {
            u[k] = bm * u[k] + obm * i[k];
            i[k] = bs * i[k] + xp[off + k];
            yp[off + k] = u[k];
          }
        }
      }
    });
  });
  return y;
}

// Adjoint of leaky_filter: dL/dx from dL/dU[1..T]. With λ_U, λ_I the adjoints of U[n+1],
// I[n+1]: λ_U += dy[n]; dx[n] = λ_I; (λ_U, λ_I) <- (β_m λ_U, (1 - β_m) λ_U + β_s λ_I).
Tensor leaky_filter_backward(const Tensor& dy, double beta_mem, double one_minus_beta_mem,
                             double beta_syn) {
  TORCH_CHECK(dy.dim() == 3 && dy.is_contiguous(), "leaky_filter_backward: contiguous input");
  const int64_t B = dy.size(0), T = dy.size(1), K = dy.size(2);
  Tensor dx = at::empty_like(dy);
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "leaky_filter_backward", [&] {
    const scalar_t bm = scalar_t(beta_mem), obm = scalar_t(one_minus_beta_mem);
    const scalar_t bs = scalar_t(beta_syn);
    const scalar_t* gp = dy.data_ptr<scalar_t>();
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> lu(K), li(K);
      for (int64_t b = b0; b < b1; ++b) {
        std::fill(lu.begin(), lu.end(), scalar_t(0));
        std::fill(li.begin(), li.end(), scalar_t(0));
        for (int64_t n = T - 1; n >= 0; --n) {
          const int64_t off = (b * T + n) * K;
          for (int64_t k = 0; k < K; ++k) {
            const scalar_t u = lu[k] + gp[off + k];
            dxp[off + k] = li[k];
            lu[k] = bm * u;
            li[k] = obm * u + bs * li[k];
          }
        }
      }
    });
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY(spikegrad_engine, m) {
  m.def("to_sparse(Tensor x, float max_density) -> Tensor[]", &to_sparse);
  m.def("sparse_mm(Tensor row_ptr, Tensor cols, Tensor vals, Tensor wt) -> Tensor", &sparse_mm);
  m.def("sparse_tmm(Tensor row_ptr, Tensor cols, Tensor vals, Tensor g, int C) -> Tensor",
        &sparse_tmm);
  m.def("lif_forward(Tensor x, Tensor vt, float beta_mem, float one_minus_beta_mem, "
        "float beta_syn, bool keep_pre_reset) -> Tensor[]", &lif_forward);
  m.def("lif_backward(Tensor grad, Tensor s, Tensor sg, Tensor u, int shape, float slope, "
        "float scale, Tensor p, Tensor v, Tensor(a!) du, "
        "Tensor(b!) di, Tensor(c!) dx, int t0, int t1, float beta_mem, "
        "float one_minus_beta_mem, float beta_syn) -> ()", &lif_backward);
  m.def("last_active_step(Tensor grad) -> int", &last_active_step);
  m.def("leaky_filter(Tensor x, float beta_mem, float one_minus_beta_mem, float beta_syn) "
        "-> Tensor", &leaky_filter);
  m.def("leaky_filter_backward(Tensor dy, float beta_mem, float one_minus_beta_mem, "
        "float beta_syn) -> Tensor", &leaky_filter_backward);
}
