// CPU kernels of the fast engine; the equations are in spikegrad/engine/__init__.py.
//
// Registered as torch operators `torch.ops.spikegrad_engine.*`. The time loops are parallel
// over the batch: every thread runs its own time loop over its share of the batch entries,
// so a call opens one parallel region, not one per time step. Per-step state is stored
// time-major ([B, T, N] tensors whose step n is one contiguous [B, N] block), so each step
// of a thread reads and writes one contiguous stretch of memory.
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

// The two products of a CSR row with a dense matrix that every sparse product here is made
// of, for the entries e in [e0, e1) of the row:
//   add_rows:     i[0..N) += Σ_e vals[e] rows[cols[e]][0..N)    (gather: W S_in, V S)
//   scatter_rows: out[cols[e]][0..N) += vals[e] g[0..N) for each e   (weight gradients)
template <typename scalar_t>
inline void add_rows(int64_t N, scalar_t* __restrict__ i, const scalar_t* __restrict__ rows,
                     const int32_t* cols, const scalar_t* vals, int64_t e0, int64_t e1) {
  for (int64_t e = e0; e < e1; ++e) {
    const scalar_t v = vals[e];
    const scalar_t* __restrict__ row = rows + int64_t(cols[e]) * N;
    for (int64_t k = 0; k < N; ++k) i[k] += v * row[k];
  }
}

template <typename scalar_t>
inline void scatter_rows(int64_t N, scalar_t* __restrict__ out, const scalar_t* __restrict__ g,
                         const int32_t* cols, const scalar_t* vals, int64_t e0, int64_t e1) {
  for (int64_t e = e0; e < e1; ++e) {
    const scalar_t v = vals[e];
    scalar_t* __restrict__ row = out + int64_t(cols[e]) * N;
    for (int64_t k = 0; k < N; ++k) row[k] += v * g[k];
  }
}

#if defined(__AVX512F__)
// float32 with AVX-512: 128 columns at a time, the row that does not move (i, or g) held in
// eight registers while the entries of the CSR row stream past.
constexpr int64_t kVectors = 8, kBlock = 16 * kVectors;

template <>
inline void add_rows<float>(int64_t N, float* __restrict__ i, const float* __restrict__ rows,
                            const int32_t* cols, const float* vals, int64_t e0, int64_t e1) {
  if (e0 == e1) return;
  int64_t k0 = 0;
  for (; k0 + kBlock <= N; k0 += kBlock) {
    __m512 acc[kVectors];
#pragma GCC unroll 8
    for (int j = 0; j < kVectors; ++j) acc[j] = _mm512_loadu_ps(i + k0 + 16 * j);
    for (int64_t e = e0; e < e1; ++e) {
      const __m512 v = _mm512_set1_ps(vals[e]);
      const float* row = rows + int64_t(cols[e]) * N + k0;
#pragma GCC unroll 8
      for (int j = 0; j < kVectors; ++j) {
        acc[j] = _mm512_fmadd_ps(v, _mm512_loadu_ps(row + 16 * j), acc[j]);
      }
    }
#pragma GCC unroll 8
    for (int j = 0; j < kVectors; ++j) _mm512_storeu_ps(i + k0 + 16 * j, acc[j]);
  }
  for (int64_t e = e0; e < e1 && k0 < N; ++e) {
    const float v = vals[e];
    const float* row = rows + int64_t(cols[e]) * N;
    for (int64_t k = k0; k < N; ++k) i[k] += v * row[k];
  }
}

template <>
inline void scatter_rows<float>(int64_t N, float* __restrict__ out, const float* __restrict__ g,
                                const int32_t* cols, const float* vals, int64_t e0, int64_t e1) {
  if (e0 == e1) return;
  int64_t k0 = 0;
  for (; k0 + kBlock <= N; k0 += kBlock) {
    __m512 gv[kVectors];
#pragma GCC unroll 8
    for (int j = 0; j < kVectors; ++j) gv[j] = _mm512_loadu_ps(g + k0 + 16 * j);
    for (int64_t e = e0; e < e1; ++e) {
      const __m512 v = _mm512_set1_ps(vals[e]);
      float* row = out + int64_t(cols[e]) * N + k0;
#pragma GCC unroll 8
      for (int j = 0; j < kVectors; ++j) {
        _mm512_storeu_ps(row + 16 * j, _mm512_fmadd_ps(v, gv[j], _mm512_loadu_ps(row + 16 * j)));
      }
    }
  }
  for (int64_t e = e0; e < e1 && k0 < N; ++e) {
    const float v = vals[e];
    float* row = out + int64_t(cols[e]) * N;
    for (int64_t k = k0; k < N; ++k) row[k] += v * g[k];
  }
}
#endif

// Collects the non-zeros of the rows of a matrix [R, C], each of `chunks` threads its own
// rows, visited in any order, and assembles them into CSR form, rows in order or time-major.
template <typename scalar_t>
struct CsrBuilder {
  std::vector<Buffer<int32_t>> cols;
  std::vector<Buffer<scalar_t>> vals;
  std::vector<int64_t> start, count;  // per row: where its entries start in its chunk's buffer
  std::vector<int32_t> chunk_of;      // per row

  CsrBuilder(int64_t rows, int64_t chunks)
      : cols(chunks), vals(chunks), start(rows), count(rows), chunk_of(rows) {}

  // Appends the non-zeros of row r (dense, C entries) to chunk c; returns where they start.
  size_t add_row(int64_t c, int64_t r, const scalar_t* row, int64_t C) {
    const size_t before = cols[c].size();
    append_nonzeros(row, C, cols[c], vals[c]);
    start[r] = static_cast<int64_t>(before);
    count[r] = static_cast<int64_t>(cols[c].size() - before);
    chunk_of[r] = static_cast<int32_t>(c);
    return before;
  }

  // The CSR matrix with its rows in the order row(0), row(1), ...
  template <typename Order>
  std::vector<Tensor> finish(const at::TensorOptions& options, const Order& row) {
    const int64_t R = static_cast<int64_t>(start.size());
    Tensor row_ptr = at::empty({R + 1}, options.dtype(at::kLong));
    int64_t* rp = row_ptr.data_ptr<int64_t>();
    rp[0] = 0;
    for (int64_t q = 0; q < R; ++q) rp[q + 1] = rp[q] + count[row(q)];
    Tensor col_t = at::empty({rp[R]}, options.dtype(at::kInt));
    Tensor val_t = at::empty({rp[R]}, options);
    int32_t* ct = col_t.data_ptr<int32_t>();
    scalar_t* vt = val_t.data_ptr<scalar_t>();
    at::parallel_for(0, R, 256, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t r = row(q);
        std::copy_n(cols[chunk_of[r]].begin() + start[r], count[r], ct + rp[q]);
        std::copy_n(vals[chunk_of[r]].begin() + start[r], count[r], vt + rp[q]);
      }
    });
    return {row_ptr, col_t, val_t};
  }

  std::vector<Tensor> finish(const at::TensorOptions& options) {
    return finish(options, [](int64_t q) { return q; });
  }
};

// Row order for CsrBuilder::finish: row q of the result is row (q % B) T + q / B, i.e. the
// rows b T + n (step n of batch entry b) reordered time-major (n B + b).
inline auto time_major_rows(int64_t B, int64_t T) {
  return [B, T](int64_t q) { return (q % B) * T + q / B; };
}

// CSR form [row_ptr (R + 1), cols (nnz), vals (nnz)] of the non-zeros of a dense [R, C]
// matrix; an empty list when some slice of rows has more than `max_density` non-zeros.
// With batch B > 0, the rows (row b T + n: step n of batch entry b, R = B T) are ordered
// time-major (row n B + b), the order in which the time loops visit them.
std::vector<Tensor> to_sparse(const Tensor& x, double max_density, int64_t B) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "to_sparse: contiguous 2-d input expected");
  TORCH_CHECK(B == 0 || x.size(0) % B == 0, "to_sparse: rows not a multiple of the batch");
  const int64_t R = x.size(0), C = x.size(1), chunks = n_chunks(R);
  std::vector<Tensor> result;
  std::atomic<bool> too_dense{false};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "to_sparse", [&] {
    CsrBuilder<scalar_t> csr(R, chunks);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    for_chunks(R, chunks, [&](int64_t c, int64_t r0, int64_t r1) {
      const auto limit = static_cast<size_t>(max_density * double((r1 - r0) * C)) + 1;
      for (int64_t r = r0; r < r1; ++r) {
        csr.add_row(c, r, xp + r * C, C);
        if (csr.cols[c].size() > limit || too_dense.load(std::memory_order_relaxed)) {
          too_dense = true;
          return;
        }
      }
    });
    if (too_dense) return;
    if (B > 0) {
      const int64_t T = R / B;
      result = csr.finish(x.options(), time_major_rows(B, T));
    } else {
      result = csr.finish(x.options());
    }
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
        std::fill_n(o + r * N, N, scalar_t(0));
        add_rows(N, o + r * N, w, cp, vp, rp[r], rp[r + 1]);
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
      for (int64_t r = r0; r < r1; ++r) scatter_rows(N, part, gp + r * N, cp, vp, rp[r], rp[r + 1]);
    });
  });
  return chunks == 1 ? parts[0] : parts.sum(0);
}

// One step of one batch entry: S = Θ(U - 1), P = β_m U + (1 - β_m) I, U <- P (1 - S),
// I <- β_s I (+ x when given; the caller adds sparse and recurrent input); records U, S, P.
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
    i[k] = x ? bs * i[k] + x[k] : bs * i[k];
  }
}

// A [B, T, N] tensor stored time-major: step n of batch entry b starts at (n B + b) N.
Tensor empty_time_major(int64_t B, int64_t T, int64_t N, const at::TensorOptions& options) {
  return at::empty_strided({B, T, N}, {N, B * N, 1}, options);
}

bool is_time_major(const Tensor& t) { return t.dim() == 3 && t.transpose(0, 1).is_contiguous(); }

// Forward time loop of a LIF layer, driven either by the projected input x = W S_in
// ([B, T, N], time-major) or, when x is empty, by the CSR form of S_in with its rows
// time-major (row n B + b, see time_major_rows) and wt = W^T [C, N], projected in the loop.
// Returns S, U and P = β_m U + (1 - β_m) I (with keep_pre_reset, else empty), [B, T, N]
// stored time-major, and the CSR form of S (row_ptr, cols, vals) twice: as [B*T, N] with row
// b T + n for step n of entry b, and with its rows time-major. vt is V^T [N, N]
// (contiguous) or an empty tensor for a feed-forward layer.
std::vector<Tensor> lif_forward(const Tensor& x, const Tensor& in_row_ptr, const Tensor& in_cols,
                                const Tensor& in_vals, const Tensor& wt, const Tensor& vt,
                                int64_t B, int64_t T, double beta_mem, double one_minus_beta_mem,
                                double beta_syn, bool keep_pre_reset) {
  const bool dense_input = x.numel() > 0, recurrent = vt.numel() > 0;
  TORCH_CHECK(!dense_input || is_time_major(x), "lif_forward: time-major [B, T, N] x expected");
  TORCH_CHECK(dense_input || (wt.dim() == 2 && wt.is_contiguous() &&
                              in_row_ptr.numel() == B * T + 1),
              "lif_forward: CSR input of B * T rows and contiguous W^T expected");
  const int64_t N = dense_input ? x.size(2) : wt.size(1), chunks = n_chunks(B);
  const auto options = dense_input ? x.options() : wt.options();
  Tensor S = empty_time_major(B, T, N, options), U = empty_time_major(B, T, N, options);
  Tensor P = keep_pre_reset ? empty_time_major(B, T, N, options) : at::empty({0}, options);
  std::vector<Tensor> sparse;
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "lif_forward", [&] {
    const scalar_t bm = scalar_t(beta_mem), obm = scalar_t(one_minus_beta_mem);
    const scalar_t bs = scalar_t(beta_syn);
    const scalar_t* xp = dense_input ? x.data_ptr<scalar_t>() : nullptr;
    const int64_t* in_rp = dense_input ? nullptr : in_row_ptr.data_ptr<int64_t>();
    const int32_t* in_cp = dense_input ? nullptr : in_cols.data_ptr<int32_t>();
    const scalar_t* in_vp = dense_input ? nullptr : in_vals.data_ptr<scalar_t>();
    const scalar_t* w = dense_input ? nullptr : wt.data_ptr<scalar_t>();
    const scalar_t* v = recurrent ? vt.data_ptr<scalar_t>() : nullptr;
    scalar_t *sp = S.data_ptr<scalar_t>(), *up = U.data_ptr<scalar_t>();
    scalar_t* pp = keep_pre_reset ? P.data_ptr<scalar_t>() : nullptr;
    CsrBuilder<scalar_t> csr(B * T, chunks);
    for_chunks(B, chunks, [&](int64_t c, int64_t b0, int64_t b1) {
      std::vector<scalar_t> state_u((b1 - b0) * N, scalar_t(0));
      std::vector<scalar_t> state_i((b1 - b0) * N, scalar_t(0));
      for (int64_t n = 0; n < T; ++n) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t q = n * B + b, off = q * N, r = b * T + n;
          scalar_t *u = state_u.data() + (b - b0) * N, *i = state_i.data() + (b - b0) * N;
          with_flag(pp != nullptr, [&](auto keep) {
            forward_row<keep.value>(N, bm, obm, bs, u, i, xp ? xp + off : nullptr, up + off,
                                    sp + off, keep.value ? pp + off : nullptr);
          });
          if (!dense_input) add_rows(N, i, w, in_cp, in_vp, in_rp[q], in_rp[q + 1]);
          const size_t before = csr.add_row(c, r, sp + off, N);
          if (recurrent) {
            add_rows(N, i, v, csr.cols[c].begin(), csr.vals[c].begin(), int64_t(before),
                     int64_t(csr.cols[c].size()));
          }
        }
      }
    });
    sparse = csr.finish(options);
    for (Tensor& t : csr.finish(options, time_major_rows(B, T))) {
      sparse.push_back(t);
    }
  });
  return {S, U, P, sparse[0], sparse[1], sparse[2], sparse[3], sparse[4], sparse[5]};
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
// from dL/dS (grad) to dL/dx (dx, when not empty; dx[n] = dI[n+1]), all [B, T, N] stored
// time-major, carrying the adjoints du = dU[t1], di = dI[t1] ([B, N], updated in place to
// dU[t0], dI[t0]). sg = σ'(U - 1) of the block ([t1 - t0, B, N]) when shape is GIVEN, else
// u = U and σ' is the built-in surrogate `shape` (slope, scale); p is the pre-reset
// membrane for a differentiable reset (else empty); v = V [N, N] when gradients flow
// through the recurrence (else empty). Backwards in time:
//   g     = dS[n] + dI[n+1] V - dU[n+1] P[n]     (recurrence / reset terms when enabled)
//   a     = dU[n+1] (1 - S[n])
//   dU[n] = β_m a + g σ'[n],   dI[n] = (1 - β_m) a + β_s dI[n+1]
// With the CSR forms of the layer's input S_in and of its spikes S, rows time-major,
// given, it also returns this block's share of dW^T = Σ_n S_in[n]^T dx[n] ([C, N]) and of
// dV^T = Σ_n S[n]^T dx[n] ([N, N]) (empty tensors for those not given).
std::vector<Tensor> lif_backward(const Tensor& grad, const Tensor& s, const Tensor& sg,
                                 const Tensor& u, int64_t shape, double slope, double scale,
                                 const Tensor& p, const Tensor& v, Tensor du, Tensor di,
                                 Tensor dx, const Tensor& in_row_ptr, const Tensor& in_cols,
                                 const Tensor& in_vals, int64_t C, const Tensor& s_row_ptr,
                                 const Tensor& s_cols, const Tensor& s_vals, int64_t t0,
                                 int64_t t1, double beta_mem, double one_minus_beta_mem,
                                 double beta_syn) {
  const bool reset_grad = p.numel() > 0, recurrent = v.numel() > 0, want_dx = dx.numel() > 0;
  const bool grad_w = in_row_ptr.numel() > 0, grad_v = s_row_ptr.numel() > 0;
  TORCH_CHECK(is_time_major(grad) && is_time_major(s) && (shape == 0 || is_time_major(u)) &&
                  (!reset_grad || is_time_major(p)) && (!want_dx || is_time_major(dx)) &&
                  sg.is_contiguous() && du.is_contiguous() && di.is_contiguous(),
              "lif_backward: time-major [B, T, N] tensors expected");
  const int64_t B = grad.size(0), T = grad.size(1), N = grad.size(2);
  const int64_t chunks = n_chunks(B);
  Tensor dwt = grad_w ? at::zeros({chunks, C, N}, grad.options()) : at::empty({0}, grad.options());
  Tensor dvt = grad_v ? at::zeros({chunks, N, N}, grad.options()) : at::empty({0}, grad.options());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "lif_backward", [&] {
    const scalar_t bm = scalar_t(beta_mem), obm = scalar_t(one_minus_beta_mem);
    const scalar_t bs = scalar_t(beta_syn);
    const scalar_t *gp = grad.data_ptr<scalar_t>(), *spk = s.data_ptr<scalar_t>();
    const scalar_t* sgp = shape == GIVEN ? sg.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ump = shape == GIVEN ? nullptr : u.data_ptr<scalar_t>();
    const scalar_t slope_ = scalar_t(slope), scale_ = scalar_t(scale);
    const scalar_t* pp = reset_grad ? p.data_ptr<scalar_t>() : nullptr;
    scalar_t* dxp = want_dx ? dx.data_ptr<scalar_t>() : nullptr;
    const int64_t* in_rp = grad_w ? in_row_ptr.data_ptr<int64_t>() : nullptr;
    const int32_t* in_cp = grad_w ? in_cols.data_ptr<int32_t>() : nullptr;
    const scalar_t* in_vp = grad_w ? in_vals.data_ptr<scalar_t>() : nullptr;
    const int64_t* s_rp = grad_v ? s_row_ptr.data_ptr<int64_t>() : nullptr;
    const int32_t* s_cp = grad_v ? s_cols.data_ptr<int32_t>() : nullptr;
    const scalar_t* s_vp = grad_v ? s_vals.data_ptr<scalar_t>() : nullptr;
    for_chunks(B, chunks, [&](int64_t c, int64_t b0, int64_t b1) {
      std::vector<scalar_t> sgbuf(N);
      const int64_t nb = b1 - b0;
      scalar_t* dwt_c = grad_w ? dwt.data_ptr<scalar_t>() + c * C * N : nullptr;
      scalar_t* dvt_c = grad_v ? dvt.data_ptr<scalar_t>() + c * N * N : nullptr;
      Tensor du_c = du.narrow(0, b0, nb), di_c = di.narrow(0, b0, nb);
      Tensor rec = recurrent ? at::empty({nb, N}, grad.options()) : Tensor();
      scalar_t *dup = du_c.data_ptr<scalar_t>(), *dip = di_c.data_ptr<scalar_t>();
      for (int64_t n = t1 - 1; n >= t0; --n) {
        if (recurrent) at::mm_out(rec, di_c, v);
        const scalar_t* rp = recurrent ? rec.data_ptr<scalar_t>() : nullptr;
        for (int64_t b = 0; b < nb; ++b) {
          const int64_t q = n * B + b0 + b, off = q * N;
          const scalar_t* sgr = sgbuf.data();
          scalar_t *dur = dup + b * N, *dir = dip + b * N;  // dU[n+1], dI[n+1] = dx[n]
          if (want_dx) std::copy_n(dir, N, dxp + off);
          if (grad_w) scatter_rows(N, dwt_c, dir, in_cp, in_vp, in_rp[q], in_rp[q + 1]);
          if (grad_v) scatter_rows(N, dvt_c, dir, s_cp, s_vp, s_rp[q], s_rp[q + 1]);
          with_shape(shape, [&](auto sh) {
            with_flag(rp != nullptr, [&](auto rec_term) {
              with_flag(pp != nullptr, [&](auto reset_term) {
                if constexpr (sh.value == GIVEN) {
                  sgr = sgp + ((n - t0) * B + b0 + b) * N;
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
  return {grad_w ? dwt.sum(0) : dwt, grad_v ? dvt.sum(0) : dvt};
}

// 1 + the last step n at which grad ([B, T, N], time-major) is non-zero for some batch
// entry (0 if none); scans backwards and stops at the first non-zero.
int64_t last_active_step(const Tensor& grad) {
  TORCH_CHECK(is_time_major(grad), "last_active_step: time-major [B, T, N] input expected");
  const int64_t B = grad.size(0), T = grad.size(1), N = grad.size(2);
  int64_t last = 0;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "last_active_step", [&] {
    const scalar_t* gp = grad.data_ptr<scalar_t>();
    for (int64_t n = T - 1; n >= 0 && last == 0; --n) {
      if (any_nonzero(gp + n * B * N, B * N)) last = n + 1;
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
  m.def("to_sparse(Tensor x, float max_density, int B) -> Tensor[]", &to_sparse);
  m.def("sparse_mm(Tensor row_ptr, Tensor cols, Tensor vals, Tensor wt) -> Tensor", &sparse_mm);
  m.def("sparse_tmm(Tensor row_ptr, Tensor cols, Tensor vals, Tensor g, int C) -> Tensor",
        &sparse_tmm);
  m.def("lif_forward(Tensor x, Tensor in_row_ptr, Tensor in_cols, Tensor in_vals, Tensor wt, "
        "Tensor vt, int B, int T, float beta_mem, float one_minus_beta_mem, float beta_syn, "
        "bool keep_pre_reset) -> Tensor[]", &lif_forward);
  m.def("lif_backward(Tensor grad, Tensor s, Tensor sg, Tensor u, int shape, float slope, "
        "float scale, Tensor p, Tensor v, Tensor(a!) du, Tensor(b!) di, Tensor(c!) dx, "
        "Tensor in_row_ptr, Tensor in_cols, Tensor in_vals, int C, Tensor s_row_ptr, "
        "Tensor s_cols, Tensor s_vals, int t0, int t1, float beta_mem, "
        "float one_minus_beta_mem, float beta_syn) -> Tensor[]", &lif_backward);
  m.def("last_active_step(Tensor grad) -> int", &last_active_step);
  m.def("leaky_filter(Tensor x, float beta_mem, float one_minus_beta_mem, float beta_syn) "
        "-> Tensor", &leaky_filter);
  m.def("leaky_filter_backward(Tensor dy, float beta_mem, float one_minus_beta_mem, "
        "float beta_syn) -> Tensor", &leaky_filter_backward);
}
