// CPU kernels of the fast engine; the equations are in spikegrad/engine/__init__.py.
//
// Registered as torch operators `torch.ops.spikegrad_engine.*`. Work is split into a fixed
// number of blocks (of batch entries, or of rows), set by the size of the problem alone:
// threads take the next unclaimed block when they are free (no barrier inside a call, and a
// thread that the operating system deschedules delays only the block it holds), and every
// sum across blocks (weight gradients) adds the blocks' partial sums in block order, so the
// results are bit for bit the same for any number of threads. Each block of batch entries
// runs all T steps of its entries. Per-step state is stored time-major ([B, T, N] tensors
// whose step n is one contiguous [B, N] block), so each step of a block reads and writes one
// contiguous stretch of memory.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

namespace {

using at::Tensor;

// The small functions of the inner loops are always inlined: they run once per step and
// batch entry, on rows of a few vectors, where a call costs as much as the work.
#define SG_INLINE inline __attribute__((always_inline))

// Vectors of float32 lanes for the inner loops, on the widest instructions the build may
// use: 16 lanes with AVX-512, 8 with AVX2 and FMA (most laptops). The vector loops below are
// written once on these operations; each element sees the same operations in the same order
// with either width (fused multiply-adds only where a loop asks for them), so both give the
// same bits. A Mask picks lanes: a bit mask with AVX-512, lanes of all ones with AVX2.
#if defined(__AVX512F__)
#define SG_VECTORS 1
struct Vec {
  using V = __m512;
  using Mask = __mmask16;
  static constexpr int64_t lanes = 16;
  static constexpr int tile_vectors = 4;  // vectors of columns in a register tile (32 registers)

  static V set1(float x) { return _mm512_set1_ps(x); }
  static V zero() { return _mm512_setzero_ps(); }
  static Mask all() { return Mask(0xFFFF); }
  static Mask below(int64_t left) {  // lanes [0, left)
    return static_cast<Mask>((1u << std::clamp<int64_t>(left, 0, 16)) - 1u);
  }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }  // others 0
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void store(float* p, Mask m, V v) { _mm512_mask_storeu_ps(p, m, v); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V abs(V a) { return _mm512_abs_ps(a); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }  // a > b ? a : b (b if NaN)
  static V min(V a, V b) { return _mm512_min_ps(a, b); }  // a < b ? a : b (b if NaN)
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }  // a b + c, one rounding
  static V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a b, one rounding
  static V floor(V a) { return _mm512_floor_ps(a); }
  static V pow2(V k) {  // 2^k for integral k in [-126, 127]: k + 127 in the exponent bits
    const __m512i biased = _mm512_sub_epi32(_mm512_castps_si512(add(k, set1(12582912.0f))),
                                            _mm512_set1_epi32(0x4B400000 - 127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(biased, 23));
  }
  static V in_register(V v) {  // see the AVX2 Vec (the tests' emulated build: no register)
#ifdef __AVX512F__
    __asm__("" : "+v"(v));
#endif
    return v;
  }
  static Mask greater(V a, V b, Mask m) { return _mm512_mask_cmp_ps_mask(m, a, b, _CMP_GT_OQ); }
  static V where(Mask s, V a) { return _mm512_maskz_mov_ps(s, a); }  // a in s, 0 elsewhere
  static V where_not(Mask s, V a) { return _mm512_maskz_mov_ps(static_cast<Mask>(~s), a); }
  static V select(Mask s, V a, V b) { return _mm512_mask_mov_ps(b, s, a); }  // a in s, else b
  static Mask equal(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static Mask nonzero(V a) { return _mm512_cmp_ps_mask(a, zero(), _CMP_NEQ_UQ); }  // NaN too
  static uint32_t bits(Mask m) { return m; }  // bit l: lane l
  // equal on int32 lanes and fill serve the readout's rows, vectorised with AVX-512 only
  static Mask equal(const int32_t* p, int32_t value, Mask m) {  // lanes of m with p[l] == value
    return _mm512_mask_cmpeq_epi32_mask(m, _mm512_maskz_loadu_epi32(m, p),
                                        _mm512_set1_epi32(value));
  }
  static void fill(int32_t* p, Mask m, int32_t value) {  // p[l] = value in the lanes of m
    _mm512_mask_storeu_epi32(p, m, _mm512_set1_epi32(value));
  }
  // The columns k0 + l of the lanes l of s appended to idx (room for 16 past m), compressed to
  // the front of a vector that is stored whole, without a branch per column (spikes come at
  // random, and a loop over them would mispredict its exit); returns the new count.
  static int64_t append_lanes(Mask s, int64_t k0, int32_t* idx, int64_t m) {
    return append_bits(bits(s), k0, idx, m);
  }
  static int64_t append_bits(uint32_t lanes, int64_t k0, int32_t* idx, int64_t m) {
    const __m512i columns = _mm512_add_epi32(
        _mm512_set1_epi32(static_cast<int32_t>(k0)),
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    _mm512_storeu_si512(idx + m, _mm512_maskz_compress_epi32(static_cast<Mask>(lanes), columns));
    return m + __builtin_popcount(lanes);
  }
};
#elif defined(__AVX2__) && defined(__FMA__)
#define SG_VECTORS 1
// The columns of the set bits of an 8-bit mask, as bytes packed into a 64-bit word, for each
// of the 256 masks (AVX2 has no compress instruction).
struct ColumnsOfBits {
  uint64_t packed[256];
  constexpr ColumnsOfBits() : packed() {
    for (int bits = 0; bits < 256; ++bits) {
      uint64_t p = 0;
      int m = 0;
      for (int j = 0; j < 8; ++j) {
        if (bits & (1 << j)) p |= uint64_t(j) << (8 * m++);
      }
      packed[bits] = p;
    }
  }
};
constexpr ColumnsOfBits kColumnsOfBits{};

struct Vec {
  using V = __m256;
  using Mask = __m256i;
  static constexpr int64_t lanes = 8;
  static constexpr int tile_vectors = 3;  // vectors of columns in a register tile (16 registers)

  static V set1(float x) { return _mm256_set1_ps(x); }
  static V zero() { return _mm256_setzero_ps(); }
  static Mask all() { return _mm256_set1_epi32(-1); }
  static Mask below(int64_t left) {  // lanes [0, left)
    const int32_t n = static_cast<int32_t>(std::clamp<int64_t>(left, 0, 8));
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }  // others 0
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  // The lanes of m stored one by one from a copy of v: AVX2's masked store (vmaskmovps) is
  // slow on some CPUs (AMD Zen 3: randman steps 2-3 %, shd 1 % faster this way, A/B pairs).
  static void store(float* p, Mask m, V v) {
    alignas(32) float lanes_of_v[8];
    _mm256_store_ps(lanes_of_v, v);
    const int bits = _mm256_movemask_ps(_mm256_castsi256_ps(m));
    for (int l = 0; l < 8; ++l) {
      if (bits >> l & 1) p[l] = lanes_of_v[l];
    }
  }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V abs(V a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }  // a > b ? a : b (b if NaN)
  static V min(V a, V b) { return _mm256_min_ps(a, b); }  // a < b ? a : b (b if NaN)
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }  // a b + c, one rounding
  static V fnmadd(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }  // c - a b, one rounding
  static V floor(V a) { return _mm256_floor_ps(a); }
  static V pow2(V k) {  // 2^k for integral k in [-126, 127]: k + 127 in the exponent bits
    const __m256i biased = _mm256_sub_epi32(_mm256_castps_si256(add(k, set1(12582912.0f))),
                                            _mm256_set1_epi32(0x4B400000 - 127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23));
  }
  // v kept in a register: an empty asm statement takes and returns it, so the compiler cannot
  // fold the load that made v into each instruction that uses it
  static V in_register(V v) {
    __asm__("" : "+x"(v));
    return v;
  }
  static Mask greater(V a, V b, Mask m) {
    return _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_GT_OQ)), m);
  }
  static V where(Mask s, V a) { return _mm256_and_ps(_mm256_castsi256_ps(s), a); }
  static V where_not(Mask s, V a) { return _mm256_andnot_ps(_mm256_castsi256_ps(s), a); }
  static V select(Mask s, V a, V b) {  // a in s, else b
    return _mm256_blendv_ps(b, a, _mm256_castsi256_ps(s));
  }
  static Mask equal(V a, V b) { return _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_EQ_OQ)); }
  static Mask nonzero(V a) {  // NaN too
    return _mm256_castps_si256(_mm256_cmp_ps(a, zero(), _CMP_NEQ_UQ));
  }
  static uint32_t bits(Mask m) {  // bit l: lane l
    return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(m)));
  }
  // The columns k0 + l of the lanes l of s appended to idx (room for 8 past m), looked up in
  // kColumnsOfBits without a branch per column; returns the new count.
  static int64_t append_lanes(Mask s, int64_t k0, int32_t* idx, int64_t m) {
    return append_bits(bits(s), k0, idx, m);
  }
  static int64_t append_bits(uint32_t lanes, int64_t k0, int32_t* idx, int64_t m) {
    const __m128i packed = _mm_cvtsi64_si128(static_cast<int64_t>(kColumnsOfBits.packed[lanes]));
    const __m256i columns = _mm256_add_epi32(_mm256_cvtepu8_epi32(packed),
                                             _mm256_set1_epi32(static_cast<int32_t>(k0)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + m), columns);
    return m + __builtin_popcount(lanes);
  }
};
#endif

// A buffer of n elements left uninitialised, for scratch rows that are written before they
// are read.
template <typename T>
std::unique_ptr<T[]> scratch(size_t n) {
  return std::unique_ptr<T[]>(new T[n]);
}

#if defined(SG_VECTORS)
// Loads and stores masked only for the last, partial vector of a row (masked stores to
// memory that is not in cache are slow: full vectors go without a mask).
template <bool masked>
SG_INLINE Vec::V load_lanes(const float* p, Vec::Mask m) {
  if constexpr (masked) {
    return Vec::load(p, m);
  } else {
    return Vec::load(p);
  }
}

template <bool masked>
SG_INLINE void store_lanes(float* p, Vec::Mask m, Vec::V v) {
  if constexpr (masked) {
    Vec::store(p, m, v);
  } else {
    Vec::store(p, v);
  }
}

// Calls f(masked, k0, mask) for the vectors of columns of [0, N): full ones, then the
// partial last one (masked = std::true_type; its other lanes load as 0).
template <typename F>
SG_INLINE void for_vectors(int64_t N, const F& f) {
  int64_t k0 = 0;
  for (; k0 + Vec::lanes <= N; k0 += Vec::lanes) f(std::false_type{}, k0, Vec::all());
  if (k0 < N) f(std::true_type{}, k0, Vec::below(N - k0));
}
#endif

constexpr int64_t kMaxBlocks = 16;

// The number of blocks [0, n) is cut into: at most kMaxBlocks, whatever the thread count.
int64_t n_blocks(int64_t n, int64_t max_blocks = kMaxBlocks) {
  return std::max<int64_t>(1, std::min<int64_t>(n, max_blocks));
}

// Where block c of the `blocks` slices [n c / blocks, n (c + 1) / blocks) of [0, n) begins.
int64_t block_begin(int64_t n, int64_t c, int64_t blocks) { return n * c / blocks; }

// Run f(block, begin, end) for the `blocks` slices of [0, n) (block_begin). Threads claim
// blocks one at a time, so a slow thread holds up one block at most.
template <typename F>
void for_blocks(int64_t n, int64_t blocks, const F& f) {
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), blocks);
  if (threads <= 1 || at::in_parallel_region()) {
    for (int64_t c = 0; c < blocks; ++c) {
      f(c, block_begin(n, c, blocks), block_begin(n, c + 1, blocks));
    }
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < blocks;
         c = next.fetch_add(1, std::memory_order_relaxed)) {
      f(c, block_begin(n, c, blocks), block_begin(n, c + 1, blocks));
    }
  });
}

// Sum of the partial results parts[c] ([blocks, ...]) in block order, into parts[0]: the
// same bits for any number of threads. Threads take stretches of the elements (each summed
// over the blocks while it is in cache).
Tensor sum_blocks(const Tensor& parts) {
  const int64_t blocks = parts.size(0), size = parts[0].numel();
  constexpr int64_t kStretch = 4096;
  AT_DISPATCH_FLOATING_TYPES(parts.scalar_type(), "sum_blocks", [&] {
    scalar_t* total = parts.data_ptr<scalar_t>();
    at::parallel_for(0, (size + kStretch - 1) / kStretch, 16, [&](int64_t s0, int64_t s1) {
      const int64_t k0 = s0 * kStretch, k1 = std::min(size, s1 * kStretch);
      for (int64_t c = 1; c < blocks; ++c) {
        const scalar_t* part = total + c * size;
        for (int64_t k = k0; k < k1; ++k) total[k] += part[k];
      }
    });
  });
  return parts[0];
}

// Zeroes the buffer of block c of parts ([blocks, ...]) and returns it: each block clears its
// own when it starts, while it goes into the cache of the thread that fills it.
template <typename scalar_t>
scalar_t* cleared_part(const Tensor& parts, int64_t c) {
  const int64_t size = parts[0].numel();
  scalar_t* part = parts.data_ptr<scalar_t>() + c * size;
  std::fill_n(part, size, scalar_t(0));
  return part;
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

#if defined(SG_VECTORS)
template <>
inline uint32_t nonzero_mask32<float>(const float* p) {
  uint32_t mask = 0;
  for (int64_t k0 = 0; k0 < 32; k0 += Vec::lanes) {
    mask |= Vec::bits(Vec::nonzero(Vec::load(p + k0))) << k0;
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
// of, for the entries e in [e0, e1) of the row (vals == nullptr: every value is 1, as for
// spikes):
//   add_rows:     i[0..N) += Σ_e vals[e] rows[cols[e]][0..N)    (gather: W S_in, V S)
//   scatter_rows: out[cols[e]][0..N) += vals[e] g[0..N) for each e   (weight gradients)
template <typename scalar_t>
SG_INLINE scalar_t value_at(const scalar_t* vals, int64_t e) {
  return vals ? vals[e] : scalar_t(1);
}

template <typename scalar_t>
SG_INLINE void add_rows(int64_t N, scalar_t* __restrict__ i, const scalar_t* __restrict__ rows,
                     const int32_t* cols, const scalar_t* vals, int64_t e0, int64_t e1) {
  for (int64_t e = e0; e < e1; ++e) {
    const scalar_t v = value_at(vals, e);
    const scalar_t* __restrict__ row = rows + int64_t(cols[e]) * N;
    for (int64_t k = 0; k < N; ++k) i[k] += v * row[k];
  }
}

template <typename scalar_t>
SG_INLINE void scatter_rows(int64_t N, scalar_t* __restrict__ out, const scalar_t* __restrict__ g,
                         const int32_t* cols, const scalar_t* vals, int64_t e0, int64_t e1) {
  for (int64_t e = e0; e < e1; ++e) {
    const scalar_t v = value_at(vals, e);
    scalar_t* __restrict__ row = out + int64_t(cols[e]) * N;
    for (int64_t k = 0; k < N; ++k) row[k] += v * g[k];
  }
}

#if defined(SG_VECTORS)
// float32 in vectors: up to 8 vectors of columns at a time (the last one masked to what is
// left), the row that does not move (i, or g) held in registers while the entries of the CSR
// row stream past.
template <int V>
SG_INLINE void add_rows_v(int64_t N, int64_t k0, float* __restrict__ i,
                       const float* __restrict__ rows, const int32_t* cols, const float* vals,
                       int64_t e0, int64_t e1) {
  constexpr int64_t L = Vec::lanes;
  const Vec::Mask last = Vec::below(N - k0 - L * (V - 1));
  const bool full = N - k0 >= L * V;  // the last vector too: no mask at all
  Vec::V acc[V];
#pragma GCC unroll 8
  for (int j = 0; j < V - 1; ++j) acc[j] = Vec::load(i + k0 + L * j);
  acc[V - 1] = Vec::load(i + k0 + L * (V - 1), last);
  for (int64_t e = e0; e < e1; ++e) {
    const Vec::V v = Vec::set1(value_at(vals, e));
    const float* row = rows + int64_t(cols[e]) * N + k0;
#pragma GCC unroll 8
    for (int j = 0; j < V - 1; ++j) acc[j] = Vec::fmadd(v, Vec::load(row + L * j), acc[j]);
    const Vec::V tail = full ? Vec::load(row + L * (V - 1)) : Vec::load(row + L * (V - 1), last);
    acc[V - 1] = Vec::fmadd(v, tail, acc[V - 1]);
  }
#pragma GCC unroll 8
  for (int j = 0; j < V - 1; ++j) Vec::store(i + k0 + L * j, acc[j]);
  if (full) {
    Vec::store(i + k0 + L * (V - 1), acc[V - 1]);
  } else {
    Vec::store(i + k0 + L * (V - 1), last, acc[V - 1]);
  }
}

template <int V>
SG_INLINE void scatter_rows_v(int64_t N, int64_t k0, float* __restrict__ out,
                           const float* __restrict__ g, const int32_t* cols, const float* vals,
                           int64_t e0, int64_t e1) {
  constexpr int64_t L = Vec::lanes;
  const Vec::Mask last = Vec::below(N - k0 - L * (V - 1));
  const bool full = N - k0 >= L * V;
  Vec::V gv[V];
#pragma GCC unroll 8
  for (int j = 0; j < V - 1; ++j) gv[j] = Vec::load(g + k0 + L * j);
  gv[V - 1] = Vec::load(g + k0 + L * (V - 1), last);
  for (int64_t e = e0; e < e1; ++e) {
    const Vec::V v = Vec::set1(value_at(vals, e));
    float* row = out + int64_t(cols[e]) * N + k0;
#pragma GCC unroll 8
    for (int j = 0; j < V - 1; ++j) {
      Vec::store(row + L * j, Vec::fmadd(v, gv[j], Vec::load(row + L * j)));
    }
    float* tail = row + L * (V - 1);
    if (full) {
      Vec::store(tail, Vec::fmadd(v, gv[V - 1], Vec::load(tail)));
    } else {
      Vec::store(tail, last, Vec::fmadd(v, gv[V - 1], Vec::load(tail, last)));
    }
  }
}

// Calls f with the number of vectors (1..8) that cover the columns [k0, min(k0 + 8 lanes, N)).
template <typename F>
SG_INLINE void with_vectors(int64_t left, const F& f) {
  switch (std::min<int64_t>((left + Vec::lanes - 1) / Vec::lanes, 8)) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default: return f(std::integral_constant<int, 8>{});
  }
}

template <>
SG_INLINE void add_rows<float>(int64_t N, float* __restrict__ i, const float* __restrict__ rows,
                            const int32_t* cols, const float* vals, int64_t e0, int64_t e1) {
  if (e0 == e1) return;
  for (int64_t k0 = 0; k0 < N; k0 += 8 * Vec::lanes) {
    with_vectors(N - k0, [&](auto v) { add_rows_v<v.value>(N, k0, i, rows, cols, vals, e0, e1); });
  }
}

template <>
SG_INLINE void scatter_rows<float>(int64_t N, float* __restrict__ out, const float* __restrict__ g,
                                const int32_t* cols, const float* vals, int64_t e0, int64_t e1) {
  if (e0 == e1) return;
  for (int64_t k0 = 0; k0 < N; k0 += 8 * Vec::lanes) {
    with_vectors(N - k0, [&](auto v) {
      scatter_rows_v<v.value>(N, k0, out, g, cols, vals, e0, e1);
    });
  }
}
#endif

// The sparse form of a [B, T, C] tensor used throughout: its B T rows in time-major order
// (row q = n B + b is step n of batch entry b), row q's entries at [begin[q], end[q]) of
// cols (int32) and vals. Rows need not be stored in order: each block of batch entries
// writes its rows into its own stretch of the arrays.
struct Sparse {
  Tensor begin, end, cols, vals;
};

// Collects the non-zeros of the rows of each block into the block's own buffers, then
// concatenates the buffers (one copy per block) and offsets the row ranges. Each block also
// lists its rows and where they start in its own arrays, and keeps its buffers on cache
// lines of its own: blocks that run at the same time never write to the same cache line
// (rows of neighbouring batch entries are neighbours in the time-major order).
template <typename scalar_t>
struct SparseBuilder {
  struct alignas(64) Part {
    Buffer<int32_t> cols;
    Buffer<scalar_t> vals;
    Buffer<int64_t> rows, starts;  // row q, and where its entries start
  };
  std::vector<Part> parts;
  int64_t n_rows;

  SparseBuilder(int64_t n_rows, int64_t blocks) : parts(blocks), n_rows(n_rows) {}

  size_t entries(int64_t c) const { return parts[c].cols.size(); }

  // Appends the non-zeros of row q (dense, C entries) to block c.
  void add_row(int64_t c, int64_t q, const scalar_t* row, int64_t C) {
    Part& part = parts[c];
    part.rows.push_back(q);
    part.starts.push_back(static_cast<int64_t>(part.cols.size()));
    append_nonzeros(row, C, part.cols, part.vals);
  }

  // Appends the spikes (value 1) of row q at the columns idx[0..m) to block c.
  void add_spikes(int64_t c, int64_t q, const int32_t* idx, int64_t m) {
    Part& part = parts[c];
    const size_t before = part.cols.size();
    part.rows.push_back(q);
    part.starts.push_back(static_cast<int64_t>(before));
    part.cols.reserve_extra(size_t(m));
    part.vals.reserve_extra(size_t(m));
    std::copy_n(idx, m, part.cols.data() + before);
    std::fill_n(part.vals.data() + before, m, scalar_t(1));
    part.cols.set_size(before + size_t(m));
    part.vals.set_size(before + size_t(m));
  }

  Sparse finish(const at::TensorOptions& options) const {
    const int64_t blocks = int64_t(parts.size());
    std::vector<int64_t> offset(blocks + 1, 0);
    for (int64_t c = 0; c < blocks; ++c) offset[c + 1] = offset[c] + int64_t(entries(c));
    Sparse out{at::empty({n_rows}, options.dtype(at::kLong)),
               at::empty({n_rows}, options.dtype(at::kLong)),
               at::empty({offset[blocks]}, options.dtype(at::kInt)),
               at::empty({offset[blocks]}, options)};
    int64_t *bp = out.begin.data_ptr<int64_t>(), *ep = out.end.data_ptr<int64_t>();
    int32_t* cp = out.cols.data_ptr<int32_t>();
    scalar_t* vp = out.vals.data_ptr<scalar_t>();
    for (int64_t c = 0; c < blocks; ++c) {
      const Part& part = parts[c];
      std::copy(part.cols.begin(), part.cols.end(), cp + offset[c]);
      std::copy(part.vals.begin(), part.vals.end(), vp + offset[c]);
      const int64_t listed = int64_t(part.rows.size());
      for (int64_t j = 0; j < listed; ++j) {
        const int64_t q = part.rows[j];
        bp[q] = offset[c] + part.starts[j];
        ep[q] = offset[c] + (j + 1 < listed ? part.starts[j + 1] : int64_t(entries(c)));
      }
    }
    return out;
  }
};

std::vector<Tensor> as_list(const Sparse& s) { return {s.begin, s.end, s.cols, s.vals}; }

// Pointers into a sparse form given as four tensors (or four empty tensors: none).
template <typename scalar_t>
struct SparseView {
  const int64_t *begin = nullptr, *end = nullptr;
  const int32_t* cols = nullptr;
  const scalar_t* vals = nullptr;

  SparseView() = default;
  SparseView(const Tensor& b, const Tensor& e, const Tensor& c, const Tensor& v) {
    if (b.numel() == 0) return;
    begin = b.data_ptr<int64_t>();
    end = e.data_ptr<int64_t>();
    cols = c.data_ptr<int32_t>();
    vals = v.data_ptr<scalar_t>();
  }
  explicit operator bool() const { return begin != nullptr; }
};

// The most non-zeros a block of `entries` batch entries (T steps, C columns) may hold for
// its sparse form to be used: beyond, the layer multiplies densely.
size_t sparse_limit(int64_t entries, int64_t T, int64_t C, double max_density) {
  return static_cast<size_t>(max_density * double(entries * T * C)) + 1;
}

// The sparse form (see Sparse) of x [B, T, C] (any strides, rows contiguous); an empty list
// when some block of batch entries has more than `max_density` non-zeros.
std::vector<Tensor> to_sparse(const Tensor& x, double max_density) {
  TORCH_CHECK(x.dim() == 3 && x.stride(2) == 1, "to_sparse: [B, T, C] with contiguous rows");
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), blocks = n_blocks(B);
  const int64_t sb = x.stride(0), st = x.stride(1);
  std::vector<Tensor> result;
  std::atomic<bool> too_dense{false};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "to_sparse", [&] {
    SparseBuilder<scalar_t> sparse(B * T, blocks);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    for_blocks(B, blocks, [&](int64_t c, int64_t b0, int64_t b1) {
      const size_t limit = sparse_limit(b1 - b0, T, C, max_density);
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t n = 0; n < T; ++n) sparse.add_row(c, n * B + b, xp + b * sb + n * st, C);
        if (sparse.entries(c) > limit || too_dense.load(std::memory_order_relaxed)) {
          too_dense = true;
          return;
        }
      }
    });
    if (!too_dense) result = as_list(sparse.finish(x.options()));
  });
  return result;
}

// The sparse form of a coalesced sparse COO [B, T, C] tensor (indices [3, nnz] sorted by
// (b, t, c), values [nnz]): row n B + b's entries are contiguous and in column order, so the
// form takes them where they are. An empty list when some block of batch entries is denser
// than `max_density`, by the rule of to_sparse (the same blocks), so that the layer then
// multiplies densely exactly as it would with the dense tensor.
std::vector<Tensor> coo_to_sparse(const Tensor& indices, const Tensor& values, int64_t B,
                                  int64_t T, int64_t C, double max_density) {
  TORCH_CHECK(indices.dim() == 2 && indices.size(0) == 3 && values.dim() == 1 &&
                  values.size(0) == indices.size(1),
              "coo_to_sparse: indices [3, nnz] and values [nnz] expected");
  const Tensor idx = indices.to(at::kLong).contiguous();
  const int64_t nnz = idx.size(1), blocks = n_blocks(B);
  const int64_t *bi = idx.data_ptr<int64_t>(), *ti = bi + nnz, *ci = ti + nnz;
  // PyTorch does not check a COO tensor's indices unless asked: an entry outside the shape
  // or out of order (a tensor marked coalesced that is not) is refused, before any write
  // that it would send out of bounds
  int64_t previous = -1;
  const auto check = [&](int64_t e) {
    const auto inside = [](int64_t i, int64_t n) {
      return static_cast<uint64_t>(i) < static_cast<uint64_t>(n);
    };
    TORCH_CHECK(inside(bi[e], B) && inside(ti[e], T) && inside(ci[e], C),
                "inputs: the sparse entry (", bi[e], ", ", ti[e], ", ", ci[e],
                ") lies outside the shape [", B, ", ", T, ", ", C, "]");
    const int64_t key = (bi[e] * T + ti[e]) * C + ci[e];
    TORCH_CHECK(key > previous, "inputs: the sparse tensor is marked coalesced, but its "
                "entries are not in order without repeats (coalesce() it)");
    previous = key;
  };
  for (int64_t c = 0; c < blocks; ++c) {  // the entries of a block are contiguous: count them
    const int64_t b0 = block_begin(B, c, blocks), b1 = block_begin(B, c + 1, blocks);
    const int64_t e0 = std::lower_bound(bi, bi + nnz, b0) - bi;
    const int64_t e1 = std::lower_bound(bi, bi + nnz, b1) - bi;
    if (static_cast<size_t>(e1 - e0) > sparse_limit(b1 - b0, T, C, max_density)) {
      for (int64_t e = 0; e < nnz; ++e) check(e);  // as the dense product will read them
      return {};
    }
  }
  Tensor begin = at::zeros({B * T}, idx.options()), end = at::zeros({B * T}, idx.options());
  Tensor cols = at::empty({nnz}, idx.options().dtype(at::kInt));
  int64_t *bp = begin.data_ptr<int64_t>(), *ep = end.data_ptr<int64_t>();
  int32_t* cp = cols.data_ptr<int32_t>();
  for (int64_t e = 0; e < nnz; ++e) {
    check(e);
    const int64_t q = ti[e] * B + bi[e];
    if (e == 0 || ti[e] != ti[e - 1] || bi[e] != bi[e - 1]) bp[q] = e;
    ep[q] = e + 1;
    cp[e] = static_cast<int32_t>(ci[e]);
  }
  return {begin, end, cols, values.contiguous()};
}

// out [R, N]: row q = Σ_e vals[e] wt[cols[e], :] over the entries of row q of the sparse
// form (R rows) times the dense wt [C, N].
Tensor sparse_mm(const Tensor& begin, const Tensor& end, const Tensor& cols, const Tensor& vals,
                 const Tensor& wt) {
  TORCH_CHECK(wt.dim() == 2 && wt.is_contiguous(), "sparse_mm: contiguous weight expected");
  const int64_t R = begin.size(0), N = wt.size(1);
  Tensor out = at::empty({R, N}, wt.options());
  AT_DISPATCH_FLOATING_TYPES(wt.scalar_type(), "sparse_mm", [&] {
    const SparseView<scalar_t> sp(begin, end, cols, vals);
    const scalar_t* w = wt.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    for_blocks(R, n_blocks(R / 64 + 1, 64), [&](int64_t, int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        std::fill_n(o + r * N, N, scalar_t(0));
        add_rows(N, o + r * N, w, sp.cols, sp.vals, sp.begin[r], sp.end[r]);
      }
    });
  });
  return out;
}

// out [C, N] = (sparse [R, C])^T g [R, N]: the weight gradient Σ_r x[r]^T g[r] that only
// visits the non-zeros of x. Each block of rows sums into its own buffer.
Tensor sparse_tmm(const Tensor& begin, const Tensor& end, const Tensor& cols, const Tensor& vals,
                  const Tensor& g, int64_t C) {
  TORCH_CHECK(g.dim() == 2 && g.is_contiguous(), "sparse_tmm: contiguous gradient expected");
  const int64_t R = begin.size(0), N = g.size(1), blocks = n_blocks(R);
  Tensor parts = at::empty({blocks, C, N}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "sparse_tmm", [&] {
    const SparseView<scalar_t> sp(begin, end, cols, vals);
    const scalar_t* gp = g.data_ptr<scalar_t>();
    for_blocks(R, blocks, [&](int64_t c, int64_t r0, int64_t r1) {
      scalar_t* part = cleared_part<scalar_t>(parts, c);
      for (int64_t r = r0; r < r1; ++r) {
        scatter_rows(N, part, gp + r * N, sp.cols, sp.vals, sp.begin[r], sp.end[r]);
      }
    });
  });
  return sum_blocks(parts);
}

// ---------------------------------------------------------------------------------------
// One step of one batch entry of a LIF layer, forward and backward

// The decays of a layer: β_m, 1 - β_m and β_s, the same for every neuron (bm, obm, bs), or
// one per neuron (bmv, obmv, bsv, N entries each: heterogeneous time constants). The loops
// take which as a compile-time flag PN, so that a layer of one time constant runs the code
// of scalar constants.
template <typename scalar_t>
struct Decays {
  scalar_t bm = 0, obm = 0, bs = 0;
  const scalar_t *bmv = nullptr, *obmv = nullptr, *bsv = nullptr;

  bool per_neuron() const { return bmv != nullptr; }
};

// Forward: S = Θ(U - 1), P = β_m U + (1 - β_m) I, U <- P (1 - S), I <- β_s I (+ x when
// given; the caller then adds sparse and recurrent input). Records S (when sr), U (when ur),
// P (when pr) and I (when ir); writes the columns of the neurons that spiked to idx (room
// for N + 16) and returns how many.
template <bool PN, typename scalar_t>
SG_INLINE int64_t forward_row(int64_t N, const Decays<scalar_t>& d,
                           scalar_t* __restrict__ u, scalar_t* __restrict__ i,
                           const scalar_t* __restrict__ x, scalar_t* __restrict__ ur,
                           scalar_t* __restrict__ sr, scalar_t* __restrict__ pr,
                           scalar_t* __restrict__ ir, int32_t* __restrict__ idx) {
  const scalar_t one = 1;
  int64_t m = 0;
  for (int64_t k = 0; k < N; ++k) {
    const scalar_t bm = PN ? d.bmv[k] : d.bm, obm = PN ? d.obmv[k] : d.obm;
    const scalar_t bs = PN ? d.bsv[k] : d.bs;
    const scalar_t uk = u[k], s = uk > one ? one : scalar_t(0);
    const scalar_t p = bm * uk + obm * i[k];
    if (sr) sr[k] = s;
    if (ur) ur[k] = uk;
    if (pr) pr[k] = p;
    if (ir) ir[k] = i[k];
    u[k] = p * (one - s);
    i[k] = x ? bs * i[k] + x[k] : bs * i[k];
    idx[m] = static_cast<int32_t>(k);
    m += uk > one ? 1 : 0;
  }
  return m;
}

// Backward, for the built-in surrogates and those given as sg (see lif_backward):
//   g = grad + r - du P  (r: the recurrence term, when given; P: differentiable reset only)
//   a = du (1 - S),  du <- β_m a + g σ',  di <- (1 - β_m) a + β_s di,
// with S = Θ(U - 1) taken from U. With the row I[n] (ir) it also adds the step's terms of
// the decays' gradients, dβ_m += a (U - I) and dβ_s += di I (di = dI[n+1], before its
// update). Writes the columns where S = 1 to idx; returns how many.
template <bool PN, typename scalar_t>
SG_INLINE int64_t backward_row(int64_t N, const Decays<scalar_t>& d,
                            const scalar_t* __restrict__ grad, const scalar_t* __restrict__ r,
                            const scalar_t* __restrict__ p, const scalar_t* __restrict__ u,
                            const scalar_t* __restrict__ ir, const scalar_t* __restrict__ sg,
                            scalar_t* __restrict__ du, scalar_t* __restrict__ di,
                            scalar_t* __restrict__ dbm, scalar_t* __restrict__ dbs,
                            int32_t* __restrict__ idx) {
  const scalar_t one = 1;
  int64_t m = 0;
  for (int64_t k = 0; k < N; ++k) {
    const scalar_t bm = PN ? d.bmv[k] : d.bm, obm = PN ? d.obmv[k] : d.obm;
    const scalar_t bs = PN ? d.bsv[k] : d.bs;
    const scalar_t s = u[k] > one ? one : scalar_t(0);
    scalar_t g = grad[k];
    if (r) g += r[k];
    if (p) g -= du[k] * p[k];
    const scalar_t a = du[k] * (one - s);
    if (ir) {
      dbm[k] += a * (u[k] - ir[k]);
      dbs[k] += di[k] * ir[k];
    }
    du[k] = bm * a + g * sg[k];
    di[k] = obm * a + bs * di[k];
    idx[m] = static_cast<int32_t>(k);
    m += u[k] > one ? 1 : 0;
  }
  return m;
}

#if defined(SG_VECTORS)
// The same two loops in vectors of float32 lanes, with the same operations per element.
// The decay of the lanes from k0 on: `same` (PN false), or loaded from v (PN true).
template <bool PN, bool masked>
SG_INLINE Vec::V decay_lanes(const float* v, Vec::V same, int64_t k0, Vec::Mask m) {
  if constexpr (PN) {
    return load_lanes<masked>(v + k0, m);
  } else {
    return same;
  }
}

template <bool PN>
SG_INLINE int64_t forward_row(int64_t N, const Decays<float>& d,
                              float* __restrict__ u, float* __restrict__ i,
                              const float* __restrict__ x, float* __restrict__ ur,
                              float* __restrict__ sr, float* __restrict__ pr,
                              float* __restrict__ ir, int32_t* __restrict__ idx) {
  using V = Vec::V;
  const V one = Vec::set1(1.0f), sbm = Vec::set1(d.bm), sobm = Vec::set1(d.obm);
  const V sbs = Vec::set1(d.bs);
  int64_t m = 0;
  for_vectors(N, [&](auto masked, int64_t k0, Vec::Mask mt) {
    constexpr bool M = decltype(masked)::value;
    const V vbm = decay_lanes<PN, M>(d.bmv, sbm, k0, mt);
    const V vobm = decay_lanes<PN, M>(d.obmv, sobm, k0, mt);
    const V vbs = decay_lanes<PN, M>(d.bsv, sbs, k0, mt);
    const V uk = load_lanes<M>(u + k0, mt), ik = load_lanes<M>(i + k0, mt);
    const Vec::Mask spike = Vec::greater(uk, one, mt);
    const V s = Vec::where(spike, one);
    const V p = Vec::add(Vec::mul(vbm, uk), Vec::mul(vobm, ik));
    if (sr) store_lanes<M>(sr + k0, mt, s);
    if (ur) store_lanes<M>(ur + k0, mt, uk);
    if (pr) store_lanes<M>(pr + k0, mt, p);
    if (ir) store_lanes<M>(ir + k0, mt, ik);
    store_lanes<M>(u + k0, mt, Vec::mul(p, Vec::sub(one, s)));
    V in = Vec::mul(vbs, ik);
    if (x) in = Vec::add(in, load_lanes<M>(x + k0, mt));
    store_lanes<M>(i + k0, mt, in);
    m = Vec::append_lanes(spike, k0, idx, m);
  });
  return m;
}

template <bool PN>
SG_INLINE int64_t backward_row(int64_t N, const Decays<float>& dc,
                               const float* __restrict__ grad, const float* __restrict__ r,
                               const float* __restrict__ p, const float* __restrict__ u,
                               const float* __restrict__ ir, const float* __restrict__ sg,
                               float* __restrict__ du, float* __restrict__ di,
                               float* __restrict__ dbm, float* __restrict__ dbs,
                               int32_t* __restrict__ idx) {
  using V = Vec::V;
  const V one = Vec::set1(1.0f), sbm = Vec::set1(dc.bm), sobm = Vec::set1(dc.obm);
  const V sbs = Vec::set1(dc.bs);
  int64_t m = 0;
  for_vectors(N, [&](auto masked, int64_t k0, Vec::Mask mt) {
    constexpr bool M = decltype(masked)::value;
    const V vbm = decay_lanes<PN, M>(dc.bmv, sbm, k0, mt);
    const V vobm = decay_lanes<PN, M>(dc.obmv, sobm, k0, mt);
    const V vbs = decay_lanes<PN, M>(dc.bsv, sbs, k0, mt);
    const V uk = load_lanes<M>(u + k0, mt);
    const Vec::Mask spike = Vec::greater(uk, one, mt);
    const V d = load_lanes<M>(du + k0, mt);
    V g = load_lanes<M>(grad + k0, mt);
    if (r) g = Vec::add(g, load_lanes<M>(r + k0, mt));
    if (p) g = Vec::sub(g, Vec::mul(d, load_lanes<M>(p + k0, mt)));
    const V a = Vec::where_not(spike, d);  // du (1 - S)
    const V gs = Vec::mul(g, load_lanes<M>(sg + k0, mt));
    store_lanes<M>(du + k0, mt, Vec::add(Vec::mul(vbm, a), gs));
    const V dik = load_lanes<M>(di + k0, mt);
    if (ir) {  // dβ_m += a (U - I), dβ_s += dI[n+1] I
      const V ik = load_lanes<M>(ir + k0, mt);
      store_lanes<M>(dbm + k0, mt,
                     Vec::add(load_lanes<M>(dbm + k0, mt), Vec::mul(a, Vec::sub(uk, ik))));
      store_lanes<M>(dbs + k0, mt, Vec::add(load_lanes<M>(dbs + k0, mt), Vec::mul(dik, ik)));
    }
    store_lanes<M>(di + k0, mt, Vec::add(Vec::mul(vobm, a), Vec::mul(vbs, dik)));
    m = Vec::append_lanes(spike, k0, idx, m);
  });
  return m;
}
#endif

// A [B, T, N] tensor stored time-major: step n of batch entry b starts at (n B + b) N.
Tensor empty_time_major(int64_t B, int64_t T, int64_t N, const at::TensorOptions& options) {
  return at::empty_strided({B, T, N}, {N, B * N, 1}, options);
}

bool is_time_major(const Tensor& t) { return t.dim() == 3 && t.transpose(0, 1).is_contiguous(); }

// Rows of per-step state of the batch entries [b0, b1): row (n, b) at base + n step +
// (b - b0) width. Either a slice of a time-major [B, T, width] tensor (step = B width) or a
// block's own buffer (step = (b1 - b0) width); a null base means "not recorded".
template <typename scalar_t>
struct Rows {
  scalar_t* base = nullptr;
  int64_t step = 0, width = 0, b0 = 0;

  scalar_t* operator()(int64_t n, int64_t b) const {
    return base ? base + n * step + (b - b0) * width : nullptr;
  }
};

template <typename scalar_t>
Rows<scalar_t> rows_of(const Tensor& t, int64_t b0) {  // t time-major [B, T, width], or empty
  if (t.numel() == 0) return {};
  const int64_t B = t.size(0), width = t.size(2);
  return {t.data_ptr<scalar_t>() + b0 * width, B * width, width, b0};
}

// How the readout trace is reduced over time to logits (spikegrad.losses.reduce_readout).
enum Reduction { NO_REDUCTION = 0, MAX, SUM, MEAN, LAST };

// The leaky readout's constants and weights.
template <typename scalar_t>
struct Readout {
  int64_t K = 0;
  scalar_t bm = 0, obm = 0, bs = 0, u0 = 0;
  const scalar_t* wot = nullptr;  // W_out^T [N, K] (forward)
  const scalar_t* wo = nullptr;   // W_out [K, N] (backward)
  int64_t reduction = NO_REDUCTION;
  int64_t T = 0;                  // steps (for the mean and the last step)
};

// Folds U_out[n+1] (y, K values) of one batch entry into its logits: the running maximum
// (and the first step that reached it), the running sum, or the last step's value.
template <typename scalar_t>
SG_INLINE void reduce_row(int64_t K, int64_t reduction, int64_t n, int64_t T,
                          const scalar_t* y, scalar_t* logits, int32_t* argmax) {
  for (int64_t k = 0; k < K; ++k) {
    if (reduction == MAX) {
      if (n == 0 || y[k] > logits[k]) {
        logits[k] = y[k];
        argmax[k] = static_cast<int32_t>(n);
      }
    } else if (reduction == SUM || reduction == MEAN) {
      logits[k] = n == 0 ? y[k] : logits[k] + y[k];
      if (reduction == MEAN && n == T - 1) logits[k] /= scalar_t(T);
    } else if (reduction == LAST && n == T - 1) {
      logits[k] = y[k];
    }
  }
}

// The reduced logits of one batch entry at step n: folded into in the forward loop, their
// gradient read in the backward loop (logits == nullptr: no reduction).
template <typename scalar_t>
struct Fold {
  scalar_t* logits = nullptr;       // [K] (forward)
  int32_t* argmax_out = nullptr;    // [K]: the first step of each maximum (forward, MAX)
  const scalar_t* grad = nullptr;   // [K]: dL/dlogits (backward)
  const int32_t* argmax = nullptr;  // [K]: the step of each maximum (backward, MAX)
  int64_t reduction = NO_REDUCTION, n = 0, T = 0;
};

// Batch entry b at step n of readout R, folded into logits [B, K] (with argmax [B, K]) in
// the forward loop; no fold without logits.
template <typename scalar_t>
Fold<scalar_t> forward_fold(const Readout<scalar_t>& R, int64_t b, int64_t n, scalar_t* logits,
                            int32_t* argmax) {
  if (!logits) return {};
  return {logits + b * R.K, argmax + b * R.K, nullptr, nullptr, R.reduction, n, R.T};
}

// Batch entry b at step n of readout R, reading the logits' gradient grad [B, K] (and argmax
// [B, K], for the maximum) in the backward loop; no fold without grad.
template <typename scalar_t>
Fold<scalar_t> backward_fold(const Readout<scalar_t>& R, int64_t b, int64_t n,
                             const scalar_t* grad, const int32_t* argmax) {
  if (!grad) return {};
  return {nullptr, nullptr, grad + b * R.K, argmax ? argmax + b * R.K : nullptr, R.reduction, n,
          R.T};
}

// dL/dU_out[n+1][k] that the logits' gradient g gives at step n.
template <typename scalar_t>
SG_INLINE scalar_t logits_gradient(const Fold<scalar_t>& F, int64_t k) {
  const scalar_t g = F.grad[k];
  switch (F.reduction) {
    case MAX: return F.argmax[k] == F.n ? g : scalar_t(0);
    case SUM: return g;
    case MEAN: return g / scalar_t(F.T);
    case LAST: return F.n == F.T - 1 ? g : scalar_t(0);
    default: return scalar_t(0);
  }
}

// The leaky readout of one batch entry at one step, from the spiking columns idx[0..m) of
// the hidden layer's spikes S[n]: U <- β_m U + (1 - β_m) I (recorded in y when given, folded
// into the logits by F), I <- β_s I + W_out S[n] (wot = W_out^T [N, K]).
template <typename scalar_t>
SG_INLINE void readout_row(int64_t K, scalar_t bm, scalar_t obm, scalar_t bs,
                        scalar_t* __restrict__ u, scalar_t* __restrict__ i,
                        const scalar_t* __restrict__ wot, const int32_t* idx, int64_t m,
                        scalar_t* __restrict__ y, const Fold<scalar_t>& F) {
  for (int64_t k = 0; k < K; ++k) {
    u[k] = bm * u[k] + obm * i[k];
    if (y) y[k] = u[k];
    i[k] *= bs;
  }
  if (F.logits) reduce_row(K, F.reduction, F.n, F.T, u, F.logits, F.argmax_out);
  add_rows<scalar_t>(K, i, wot, idx, nullptr, 0, m);
}

// The readout's adjoint at one step of one batch entry: with λ_U = lu, λ_I = li and
// dy[n] = dL/dU_out[n+1] (given, or nullptr: 0, plus what the logits' gradient gives),
// u = λ_U + dy[n], dx_out[n] = λ_I, λ_U <- β_m u, λ_I <- (1 - β_m) u + β_s λ_I.
template <typename scalar_t>
SG_INLINE void readout_adjoint_row(int64_t K, scalar_t bm, scalar_t obm, scalar_t bs,
                                   scalar_t* __restrict__ lu, scalar_t* __restrict__ li,
                                   const scalar_t* __restrict__ dy, const Fold<scalar_t>& F,
                                   scalar_t* __restrict__ dxo) {
  for (int64_t k = 0; k < K; ++k) {
    scalar_t d = dy ? dy[k] : scalar_t(0);
    if (F.grad) d += logits_gradient(F, k);
    const scalar_t uo = lu[k] + d;
    dxo[k] = li[k];
    lu[k] = bm * uo;
    li[k] = obm * uo + bs * li[k];
  }
}

#if defined(__AVX512F__)
// The readout's rows in vectors, with AVX-512 only: with AVX2 (10-20 classes fill one or two
// vectors of 8, the last one partly) the scalar loops above were faster in interleaved pairs
// (randman and shd steps 3 % slower in vectors; 1-2 % with masked stores lane by lane).
// reduce_row on the vector of columns [k0, k0 + lanes) (mask mt) holding y = uk, in
// registers: the row's values are not stored and read back.
SG_INLINE void reduce_vector(const Fold<float>& F, int64_t k0, Vec::Mask mt, Vec::V uk) {
  float* logits = F.logits + k0;
  switch (F.reduction) {
    case MAX: {
      const Vec::Mask up = F.n == 0 ? mt : Vec::greater(uk, Vec::load(logits, mt), mt);
      Vec::store(logits, up, uk);
      Vec::fill(F.argmax_out + k0, up, int32_t(F.n));
      break;
    }
    case SUM:
    case MEAN: {
      Vec::V total = F.n == 0 ? uk : Vec::add(Vec::load(logits, mt), uk);
      if (F.reduction == MEAN && F.n == F.T - 1) total = Vec::div(total, Vec::set1(float(F.T)));
      Vec::store(logits, mt, total);
      break;
    }
    case LAST:
      if (F.n == F.T - 1) Vec::store(logits, mt, uk);
      break;
    default:
      break;
  }
}

// logits_gradient on the vector of columns [k0, k0 + lanes) (mask mt).
SG_INLINE Vec::V logits_gradient_vector(const Fold<float>& F, int64_t k0, Vec::Mask mt) {
  const Vec::V g = Vec::load(F.grad + k0, mt);
  switch (F.reduction) {
    case MAX: return Vec::where(Vec::equal(F.argmax + k0, int32_t(F.n), mt), g);
    case SUM: return g;
    case MEAN: return Vec::div(g, Vec::set1(float(F.T)));
    case LAST: return F.n == F.T - 1 ? g : Vec::zero();
    default: return Vec::zero();
  }
}

template <>
SG_INLINE void readout_row<float>(int64_t K, float bm, float obm, float bs, float* __restrict__ u,
                                  float* __restrict__ i, const float* __restrict__ wot,
                                  const int32_t* idx, int64_t m, float* __restrict__ y,
                                  const Fold<float>& F) {
  const Vec::V vbm = Vec::set1(bm), vobm = Vec::set1(obm), vbs = Vec::set1(bs);
  for (int64_t k0 = 0; k0 < K; k0 += Vec::lanes) {
    const Vec::Mask mt = Vec::below(K - k0);
    const Vec::V ik = Vec::load(i + k0, mt);
    const Vec::V uk = Vec::add(Vec::mul(vbm, Vec::load(u + k0, mt)), Vec::mul(vobm, ik));
    Vec::store(u + k0, mt, uk);
    if (y) Vec::store(y + k0, mt, uk);
    if (F.logits) reduce_vector(F, k0, mt, uk);
    Vec::V in = Vec::mul(vbs, ik);
    for (int64_t e = 0; e < m; ++e) in = Vec::add(in, Vec::load(wot + int64_t(idx[e]) * K + k0, mt));
    Vec::store(i + k0, mt, in);
  }
}

template <>
SG_INLINE void readout_adjoint_row<float>(int64_t K, float bm, float obm, float bs,
                                          float* __restrict__ lu, float* __restrict__ li,
                                          const float* __restrict__ dy, const Fold<float>& F,
                                          float* __restrict__ dxo) {
  const Vec::V vbm = Vec::set1(bm), vobm = Vec::set1(obm), vbs = Vec::set1(bs);
  for (int64_t k0 = 0; k0 < K; k0 += Vec::lanes) {
    const Vec::Mask mt = Vec::below(K - k0);
    const Vec::V lik = Vec::load(li + k0, mt);
    Vec::V d = dy ? Vec::load(dy + k0, mt) : Vec::zero();
    if (F.grad) d = Vec::add(d, logits_gradient_vector(F, k0, mt));
    const Vec::V uo = Vec::add(Vec::load(lu + k0, mt), d);
    Vec::store(dxo + k0, mt, lik);
    Vec::store(lu + k0, mt, Vec::mul(vbm, uo));
    Vec::store(li + k0, mt, Vec::add(Vec::mul(vobm, uo), Vec::mul(vbs, lik)));
  }
}
#endif

// out [nb, N] (+)= a [nb, K] M [K, N] (row-major; ADD: added to what out holds, in the order
// k = 0, 1, ..., as add_rows adds rows): the products of a block of batch entries with a
// dense matrix at one step, dI[n+1] V through the recurrence (K = N) and dx_out[n] W_out from
// the readout.
template <bool ADD, typename scalar_t>
void block_times_matrix(int64_t nb, int64_t K, int64_t N, const scalar_t* __restrict__ a,
                        const scalar_t* __restrict__ m, scalar_t* __restrict__ out) {
  if (!ADD) std::fill_n(out, nb * N, scalar_t(0));
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t ak = a[b * K + k];
      const scalar_t* __restrict__ row = m + k * N;
      for (int64_t j = 0; j < N; ++j) out[b * N + j] += ak * row[j];
    }
  }
}

#if defined(SG_VECTORS)
// out[r, j0 + lanes c + l] (+)= Σ_k a[r, k] M[k, j0 + lanes c + l] for R rows of a and C
// vectors of columns of M (the last one masked by `last` when MASKED): R × C accumulators in
// registers, so that each vector of M loaded serves R rows and each element of a broadcast
// serves C vectors. Each element is summed over k = 0, 1, ... with fused multiply-adds. The
// vectors of M are held in registers (Vec::in_register): folded into each multiply-add instead,
// they would be loaded R times, and the tile would wait on loads (the shd step took 0.86-0.97
// of the time with them folded, in A/B pairs, both orders).
template <int R, int C, bool ADD, bool MASKED>
SG_INLINE void tile_times_matrix(int64_t K, int64_t N, int64_t j0, Vec::Mask last,
                                 const float* a, const float* __restrict__ m,
                                 float* __restrict__ out) {
  constexpr int64_t L = Vec::lanes;
  auto load = [&](const float* p, int c) {  // masked only for the last, partial vector
    return MASKED && c == C - 1 ? Vec::load(p, last) : Vec::load(p);
  };
  Vec::V acc[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[r][c] = !ADD ? Vec::zero() : load(out + r * N + j0 + L * c, c);
  }
  const float* mk = m + j0;
  for (int64_t k = 0; k < K; ++k, mk += N) {
    Vec::V mc[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) mc[c] = Vec::in_register(load(mk + L * c, c));
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const Vec::V ak = Vec::set1(a[r * K + k]);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[r][c] = Vec::fmadd(ak, mc[c], acc[r][c]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      float* o = out + r * N + j0 + L * c;
      if (MASKED && c == C - 1) {
        Vec::store(o, last, acc[r][c]);
      } else {
        Vec::store(o, acc[r][c]);
      }
    }
  }
}

// A stretch of C vectors of columns of M (K × C vectors, in L1) times every row of the
// block: tiles of 4 rows, then the rows left.
template <int C, bool ADD, bool MASKED>
SG_INLINE void block_times_columns(int64_t nb, int64_t K, int64_t N, int64_t j0, Vec::Mask last,
                                   const float* a, const float* __restrict__ m,
                                   float* __restrict__ out) {
  int64_t b = 0;
  for (; b + 4 <= nb; b += 4) {
    tile_times_matrix<4, C, ADD, MASKED>(K, N, j0, last, a + b * K, m, out + b * N);
  }
  switch (nb - b) {
    case 3: tile_times_matrix<3, C, ADD, MASKED>(K, N, j0, last, a + b * K, m, out + b * N); break;
    case 2: tile_times_matrix<2, C, ADD, MASKED>(K, N, j0, last, a + b * K, m, out + b * N); break;
    case 1: tile_times_matrix<1, C, ADD, MASKED>(K, N, j0, last, a + b * K, m, out + b * N); break;
    default: break;
  }
}

// Stretches of Vec::tile_vectors vectors of columns (4 with AVX-512's 32 registers; 3 with
// AVX2's 16, shd step -6.5 % against 2), then the vectors left; only the last vector of a row
// that is not a whole vector is masked. Columns outside, rows inside: each stretch of M is
// read from L2 (or beyond) once per call, not once per tile of rows (shd step 0.96-0.99 of
// the rows-outside order's in A/B pairs, both orders).
template <bool ADD>
void block_times_matrix(int64_t nb, int64_t K, int64_t N, const float* __restrict__ a,
                        const float* __restrict__ m, float* __restrict__ out) {
  constexpr int64_t L = Vec::lanes;
  constexpr int P = Vec::tile_vectors;
  const int64_t vectors = (N + L - 1) / L;
  const Vec::Mask tail = Vec::below(N - L * (vectors - 1));
  int64_t c0 = 0;
  for (; c0 + P < vectors; c0 += P) {
    block_times_columns<P, ADD, false>(nb, K, N, L * c0, tail, a, m, out);
  }
  with_flag(N % L != 0, [&](auto masked) {
    constexpr bool M = decltype(masked)::value;
    switch (vectors - c0) {
      case 4:
        if constexpr (P >= 4) block_times_columns<4, ADD, M>(nb, K, N, L * c0, tail, a, m, out);
        break;
      case 3: block_times_columns<3, ADD, M>(nb, K, N, L * c0, tail, a, m, out); break;
      case 2: block_times_columns<2, ADD, M>(nb, K, N, L * c0, tail, a, m, out); break;
      case 1: block_times_columns<1, ADD, M>(nb, K, N, L * c0, tail, a, m, out); break;
      default: break;
    }
  });
}
#endif

// out [C, N] = x [R, C]^T g [R, N] for a dense x (rows contiguous): the weight gradient of
// an input without a sparse form. Each block of rows sums into its own buffer, a stretch of
// kRows rows at a time (x^T of the stretch copied, then block_times_matrix: each element
// summed over the rows in order), and the blocks are added in block order, so the bits do
// not depend on the thread count (those of PyTorch's threaded product can).
Tensor dense_tmm(const Tensor& x, const Tensor& g) {
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1 && g.dim() == 2 && g.is_contiguous() &&
                  x.size(0) == g.size(0) && x.scalar_type() == g.scalar_type(),
              "dense_tmm: x [R, C] with contiguous rows and contiguous g [R, N] expected");
  constexpr int64_t kRows = 256;  // x^T and g of a stretch stay in L2
  const int64_t R = x.size(0), C = x.size(1), N = g.size(1), blocks = n_blocks(R);
  const int64_t row_stride = x.stride(0);
  Tensor parts = at::empty({blocks, C, N}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "dense_tmm", [&] {
    const scalar_t *xp = x.data_ptr<scalar_t>(), *gp = g.data_ptr<scalar_t>();
    for_blocks(R, blocks, [&](int64_t c, int64_t r0, int64_t r1) {
      scalar_t* part = cleared_part<scalar_t>(parts, c);
      const auto xt = scratch<scalar_t>(size_t(C * kRows));
      for (int64_t q0 = r0; q0 < r1; q0 += kRows) {
        const int64_t rows = std::min(kRows, r1 - q0);
        for (int64_t r = 0; r < rows; ++r) {
          const scalar_t* row = xp + (q0 + r) * row_stride;
          for (int64_t k = 0; k < C; ++k) xt[k * rows + r] = row[k];
        }
        block_times_matrix<true>(C, rows, N, xt.get(), gp + q0 * N, part);
      }
    });
  });
  return sum_blocks(parts);
}

// What drives a LIF layer, and its constants.
template <typename scalar_t>
struct Layer {
  int64_t B, N;
  Decays<scalar_t> decay;
  const scalar_t* x = nullptr;  // the projected input W S_in [B, T, N] time-major, or
  SparseView<scalar_t> in;      // the sparse form of S_in, projected in the loop by
  const scalar_t* wt = nullptr; // W^T [C, N]
  const scalar_t* vt = nullptr; // V^T [N, N] (recurrent layers)
};

// The layer of N neurons driven by x (time-major [B, T, N]) or by the sparse input form and
// wt (either may be absent where only the shapes and constants are needed); its decays are
// the numbers beta_mem, one_minus_beta_mem, beta_syn, or, when bm_v is not empty, the
// per-neuron [N] vectors bm_v, obm_v, bs_v.
template <typename scalar_t>
Layer<scalar_t> layer_of(const Tensor& x, const Tensor& in_begin, const Tensor& in_end,
                         const Tensor& in_cols, const Tensor& in_vals, const Tensor& wt,
                         const Tensor& vt, int64_t B, int64_t N, double beta_mem,
                         double one_minus_beta_mem, double beta_syn, const Tensor& bm_v,
                         const Tensor& obm_v, const Tensor& bs_v) {
  TORCH_CHECK(x.numel() == 0 || (is_time_major(x) && x.size(2) == N),
              "time-major [B, T, N] x expected");
  TORCH_CHECK(wt.numel() == 0 || (wt.dim() == 2 && wt.is_contiguous() && wt.size(1) == N),
              "contiguous W^T [C, N] expected");
  Layer<scalar_t> L{B, N, {scalar_t(beta_mem), scalar_t(one_minus_beta_mem), scalar_t(beta_syn)}};
  if (bm_v.numel() > 0) {
    for (const Tensor* t : {&bm_v, &obm_v, &bs_v}) {
      TORCH_CHECK(t->dim() == 1 && t->size(0) == N && t->is_contiguous() &&
                      t->scalar_type() == bm_v.scalar_type(),
                  "contiguous per-neuron decays [N] expected");
    }
    L.decay.bmv = bm_v.data_ptr<scalar_t>();
    L.decay.obmv = obm_v.data_ptr<scalar_t>();
    L.decay.bsv = bs_v.data_ptr<scalar_t>();
  }
  L.in = SparseView<scalar_t>(in_begin, in_end, in_cols, in_vals);
  if (x.numel() > 0) {
    L.x = x.data_ptr<scalar_t>();
  } else if (wt.numel() > 0) {
    L.wt = wt.data_ptr<scalar_t>();
  }
  if (vt.numel() > 0) L.vt = vt.data_ptr<scalar_t>();
  return L;
}

#if defined(SG_VECTORS)
// G vectors of the columns [k0, N) of rows, the last one masked to the columns below N when
// LAST_MASKED: the mask, loads and stores of vector g, and the layer's decays in them.
template <int G, bool LAST_MASKED>
struct Group {
  Vec::Mask last;

  Group(int64_t N, int64_t k0)
      : last(LAST_MASKED ? Vec::below(N - k0 - Vec::lanes * (G - 1)) : Vec::all()) {}
  SG_INLINE Vec::Mask mask(int g) const { return LAST_MASKED && g == G - 1 ? last : Vec::all(); }
  SG_INLINE Vec::V load(const float* p, int g) const {
    return LAST_MASKED && g == G - 1 ? Vec::load(p, last) : Vec::load(p);
  }
  SG_INLINE void store(float* p, int g, Vec::V v) const {
    if (LAST_MASKED && g == G - 1) {
      Vec::store(p, last, v);
    } else {
      Vec::store(p, v);
    }
  }
  template <bool PN>  // per-neuron decays, else the layer's numbers
  SG_INLINE void decays(const Decays<float>& d, int64_t k0, Vec::V* bm, Vec::V* obm,
                        Vec::V* bs) const {
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) {
      const int64_t k = k0 + Vec::lanes * g;
      bm[g] = PN ? load(d.bmv + k, g) : Vec::set1(d.bm);
      obm[g] = PN ? load(d.obmv + k, g) : Vec::set1(d.obm);
      bs[g] = PN ? load(d.bsv + k, g) : Vec::set1(d.bs);
    }
  }
};

// The forward loop of one batch entry b of a layer without recurrence, for G vectors of
// neurons from vector v0 on (the last one masked when LAST_MASKED), over steps [0, steps):
// their U and I stay in registers from step to step, the rows asked for are recorded, and
// the lanes that spiked at step n are written to bits[n nv + v] (nv vectors in a row; nv = 0:
// the spikes are not used, each step overwrites the last).
// Each element sees the operations of forward_row and add_rows, in their order.
template <bool PN, int G, bool LAST_MASKED>
SG_INLINE void forward_vectors(const Layer<float>& L, int64_t b, int64_t v0, int64_t nv,
                               int64_t steps, const Rows<float>& S, const Rows<float>& U,
                               const Rows<float>& P, const Rows<float>& I, uint32_t* bits) {
  using V = Vec::V;
  constexpr int64_t W = Vec::lanes;
  const int64_t N = L.N, k0 = v0 * W;
  const Group<G, LAST_MASKED> group(N, k0);
  const V one = Vec::set1(1.0f);
  V bm[G], obm[G], bs[G], u[G], i[G];
  group.template decays<PN>(L.decay, k0, bm, obm, bs);
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g) {
    u[g] = Vec::zero();
    i[g] = Vec::zero();
  }
  auto load = [&](const float* p, int g) { return group.load(p, g); };
  auto store = [&](float* p, int g, V v) { group.store(p, g, v); };
  for (int64_t n = 0; n < steps; ++n) {
    const int64_t q = n * L.B + b;
    float *sr = S(n, b), *ur = U(n, b), *pr = P(n, b), *ir = I(n, b);
    const float* x = L.x ? L.x + q * N : nullptr;
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) {
      const int64_t k = k0 + W * g;
      const Vec::Mask spike = Vec::greater(u[g], one, group.mask(g));
      const V s = Vec::where(spike, one);
      const V p = Vec::add(Vec::mul(bm[g], u[g]), Vec::mul(obm[g], i[g]));
      if (sr) store(sr + k, g, s);
      if (ur) store(ur + k, g, u[g]);
      if (pr) store(pr + k, g, p);
      if (ir) store(ir + k, g, i[g]);
      u[g] = Vec::mul(p, Vec::sub(one, s));
      i[g] = Vec::mul(bs[g], i[g]);
      if (x) i[g] = Vec::add(i[g], load(x + k, g));
      bits[n * nv + v0 + g] = Vec::bits(spike);
    }
    if (L.wt) {
      for (int64_t e = L.in.begin[q]; e < L.in.end[q]; ++e) {
        const V v = Vec::set1(value_at(L.in.vals, e));
        const float* row = L.wt + int64_t(L.in.cols[e]) * N + k0;
#pragma GCC unroll 4
        for (int g = 0; g < G; ++g) i[g] = Vec::fmadd(v, load(row + W * g, g), i[g]);
      }
    }
  }
}

// Calls f(G, last_masked) as compile-time constants, for 1 <= g <= 4 vectors.
template <typename F>
SG_INLINE void with_group(int64_t g, bool last_masked, const F& f) {
  using std::integral_constant;
  with_flag(last_masked, [&](auto masked) {
    switch (g) {
      case 1: return f(integral_constant<int, 1>{}, masked);
      case 2: return f(integral_constant<int, 2>{}, masked);
      case 3: return f(integral_constant<int, 3>{}, masked);
      default: return f(integral_constant<int, 4>{}, masked);
    }
  });
}

// Calls f(C) with C = 0 (no readout, or one of more than 3 vectors: readout_row) or the
// number 1-3 of vectors of the readout's K classes, as a compile-time constant.
template <typename F>
SG_INLINE void with_readout_vectors(int64_t vectors, const F& f) {
  using std::integral_constant;
  switch (vectors) {
    case 1: return f(integral_constant<int, 1>{});
    case 2: return f(integral_constant<int, 2>{});
    case 3: return f(integral_constant<int, 3>{});
    default: return f(integral_constant<int, 0>{});
  }
}

// The steps of batch entry b in order, from the bits of the neurons that spiked
// (forward_vectors): the spikes' columns to the sparse form and the counts (row: [N]), and
// the readout. The readout of C vectors (C > 0) keeps U_out, I_out and the reduced logits in
// registers over the steps, with the operations of readout_row and reduce_row on each
// element, in their order; C = 0 runs readout_row (K > 0) at each step.
template <int C>
SG_INLINE void spike_steps(const Layer<float>& L, const Readout<float>& R, int64_t b,
                           int64_t steps, int64_t nv, const uint32_t* bits, int32_t* idx,
                           const Rows<float>& Y, SparseBuilder<float>* sparse, int64_t c,
                           float* counts_row, float* logits, int32_t* argmax) {
  using V = Vec::V;
  constexpr int64_t W = Vec::lanes;
  const int64_t K = R.K;
  const Vec::Mask full = Vec::all(), last = Vec::below(K - W * (C - 1));
  const V bm = Vec::set1(R.bm), obm = Vec::set1(R.obm), bs = Vec::set1(R.bs);
  V u[C > 0 ? C : 1], i[C > 0 ? C : 1], reduced[C > 0 ? C : 1], first[C > 0 ? C : 1];
  for (int r = 0; r < C; ++r) {
    u[r] = Vec::set1(R.u0);
    i[r] = Vec::zero();
    reduced[r] = Vec::zero();
    first[r] = Vec::zero();  // the first step of each maximum, as a float
  }
  std::vector<float> out_u(C == 0 ? K : 0, R.u0), out_i(C == 0 ? K : 0, 0.0f);
  const bool reduce = logits != nullptr;
  for (int64_t n = 0; n < steps; ++n) {
    int64_t m = 0;
    for (int64_t v = 0; v < nv; ++v) m = Vec::append_bits(bits[n * nv + v], v * W, idx, m);
    if (sparse) sparse->add_spikes(c, n * L.B + b, idx, m);
    if (counts_row) {
      for (int64_t e = 0; e < m; ++e) counts_row[idx[e]] += 1.0f;
    }
    if constexpr (C == 0) {
      if (K > 0) {
        readout_row(K, R.bm, R.obm, R.bs, out_u.data(), out_i.data(), R.wot, idx, m, Y(n, b),
                    forward_fold(R, b, n, logits, argmax));
      }
    } else {
      float* y = Y(n, b);
#pragma GCC unroll 3
      for (int r = 0; r < C; ++r) {
        const Vec::Mask mr = r == C - 1 ? last : full;
        u[r] = Vec::add(Vec::mul(bm, u[r]), Vec::mul(obm, i[r]));
        if (y && r == C - 1) {
          Vec::store(y + W * r, last, u[r]);
        } else if (y) {
          Vec::store(y + W * r, u[r]);
        }
        if (reduce && R.reduction == MAX) {
          const Vec::Mask up = n == 0 ? mr : Vec::greater(u[r], reduced[r], mr);
          reduced[r] = Vec::select(up, u[r], reduced[r]);
          first[r] = Vec::select(up, Vec::set1(float(n)), first[r]);
        } else if (reduce && (R.reduction == SUM || R.reduction == MEAN)) {
          reduced[r] = n == 0 ? u[r] : Vec::add(reduced[r], u[r]);
        }
        i[r] = Vec::mul(bs, i[r]);
      }
      const V one = Vec::set1(1.0f);
      for (int64_t e = 0; e < m; ++e) {
        const float* row = R.wot + int64_t(idx[e]) * K;
#pragma GCC unroll 3
        for (int r = 0; r < C; ++r) {
          const V w = r == C - 1 ? Vec::load(row + W * r, last) : Vec::load(row + W * r);
          i[r] = Vec::fmadd(one, w, i[r]);
        }
      }
    }
  }
  if constexpr (C > 0) {
    if (!reduce || steps == 0) return;
    alignas(64) float lanes_of[C * W], steps_of[C * W];
    for (int r = 0; r < C; ++r) {
      Vec::store(lanes_of + W * r, R.reduction == LAST ? u[r] : reduced[r]);
      Vec::store(steps_of + W * r, first[r]);
    }
    float* out = logits + b * K;
    for (int64_t k = 0; k < K; ++k) {
      if (R.reduction == MAX) {
        out[k] = lanes_of[k];
        argmax[b * K + k] = static_cast<int32_t>(steps_of[k]);
      } else if (R.reduction == SUM || R.reduction == MEAN) {
        out[k] = R.reduction == MEAN && steps == R.T ? lanes_of[k] / float(R.T) : lanes_of[k];
      } else if (R.reduction == LAST && steps == R.T) {
        out[k] = lanes_of[k];
      }
    }
  }
}

// forward_entries for a float32 layer without recurrence: its neurons do not act on each
// other, so each batch entry runs all steps for a few vectors of neurons at a time (their
// state in registers, forward_vectors), keeping which neurons spiked as bits; then its steps
// in order for what takes all of a step's spikes (the counts, the sparse form, the readout).
// The same operations on each element as forward_entries: the same bits.
template <bool PN>
void forward_entries_by_neuron(const Layer<float>& L, const Readout<float>& R, int64_t b0,
                               int64_t b1, int64_t steps, const Rows<float>& S,
                               const Rows<float>& U, const Rows<float>& P, const Rows<float>& I,
                               const Rows<float>& Y, SparseBuilder<float>* sparse, int64_t c,
                               float* counts, float* logits, int32_t* argmax) {
  const int64_t N = L.N, K = R.K, nv = (N + Vec::lanes - 1) / Vec::lanes;
  const int64_t groups = (nv + 3) / 4;
  const bool spikes_used = sparse || counts || K > 0;
  const auto bits = scratch<uint32_t>(spikes_used ? steps * nv : nv);
  std::vector<int32_t> idx(N + 16);
  for (int64_t b = b0; b < b1; ++b) {
    for (int64_t gi = 0; gi < groups; ++gi) {  // groups of 1-4 vectors, as even as can be
      const int64_t v0 = nv * gi / groups, v1 = nv * (gi + 1) / groups;
      with_group(v1 - v0, v1 == nv && N % Vec::lanes != 0, [&](auto G, auto masked) {
        forward_vectors<PN, decltype(G)::value, decltype(masked)::value>(
            L, b, v0, spikes_used ? nv : 0, steps, S, U, P, I, bits.get());
      });
    }
    if (!spikes_used) continue;
    const int64_t readout_vectors = (K + Vec::lanes - 1) / Vec::lanes;
    with_readout_vectors(readout_vectors, [&](auto C) {
      spike_steps<C.value>(L, R, b, steps, nv, bits.get(), idx.data(), Y, sparse, c,
                           counts ? counts + b * N : nullptr, logits, argmax);
    });
  }
}
#endif

// The forward loop of the batch entries [b0, b1) over steps [0, steps): records the rows
// asked for (S, U, P, I; the readout trace Y when R.K > 0), and adds the spikes' columns to
// `sparse` (block c) when given. PN: per-neuron decays.
template <bool PN, typename scalar_t>
void forward_entries(const Layer<scalar_t>& L, const Readout<scalar_t>& R, int64_t b0,
                     int64_t b1, int64_t steps, const Rows<scalar_t>& S, const Rows<scalar_t>& U,
                     const Rows<scalar_t>& P, const Rows<scalar_t>& I, const Rows<scalar_t>& Y,
                     SparseBuilder<scalar_t>* sparse, int64_t c, scalar_t* counts = nullptr,
                     scalar_t* logits = nullptr, int32_t* argmax = nullptr) {
#if defined(SG_VECTORS)
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (!L.vt) {
      forward_entries_by_neuron<PN>(L, R, b0, b1, steps, S, U, P, I, Y, sparse, c, counts,
                                    logits, argmax);
      return;
    }
  }
#endif
  const int64_t N = L.N, K = R.K, nb = b1 - b0;
  std::vector<scalar_t> state_u(nb * N, scalar_t(0)), state_i(nb * N, scalar_t(0));
  std::vector<scalar_t> out_u(nb * K, R.u0), out_i(nb * K, scalar_t(0));
  std::vector<int32_t> idx(N + 16);
  for (int64_t n = 0; n < steps; ++n) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t q = n * L.B + b;
      scalar_t *u = state_u.data() + (b - b0) * N, *i = state_i.data() + (b - b0) * N;
      const int64_t m = forward_row<PN>(N, L.decay, u, i, L.x ? L.x + q * N : nullptr,
                                        U(n, b), S(n, b), P(n, b), I(n, b), idx.data());
      if (L.wt) add_rows(N, i, L.wt, L.in.cols, L.in.vals, L.in.begin[q], L.in.end[q]);
      if (L.vt) add_rows<scalar_t>(N, i, L.vt, idx.data(), nullptr, 0, m);
      if (sparse) sparse->add_spikes(c, q, idx.data(), m);
      if (counts) {
        scalar_t* row = counts + b * N;
        for (int64_t e = 0; e < m; ++e) row[idx[e]] += scalar_t(1);
      }
      if (K > 0) {
        readout_row(K, R.bm, R.obm, R.bs, out_u.data() + (b - b0) * K,
                    out_i.data() + (b - b0) * K, R.wot, idx.data(), m, Y(n, b),
                    forward_fold(R, b, n, logits, argmax));
      }
    }
  }
}

// Forward of a LIF layer (and, when wot is given, of the leaky readout that reads it).
// Driven by x = W S_in ([B, T, N], time-major) or, when x is empty, by the sparse form of
// S_in and wt = W^T [C, N], projected in the loop; vt is V^T [N, N] or empty. The decays are
// beta_mem, one_minus_beta_mem, beta_syn, or per neuron bm_v, obm_v, bs_v ([N] each; empty:
// none). Returns S (an empty tensor when not write_spikes; only with a readout), U, P = β_m U
// + (1 - β_m) I and I (when keep_state; P with keep_pre_reset, I with keep_current), [B, T,
// N] stored time-major, and the spike count
// of each neuron on each batch entry ([B, N]); then either the sparse form of S (four
// tensors), or, with a readout, its trace U_out[1..T] ([B, T, K], time-major, from
// U_out[0] = out_u0; empty when not write_trace), its logits reduced over time by
// `reduction` ([B, K]; empty without) and, for the maximum, the first step that reached it
// ([B, K], int32).
std::vector<Tensor> lif_forward(const Tensor& x, const Tensor& in_begin, const Tensor& in_end,
                                const Tensor& in_cols, const Tensor& in_vals, const Tensor& wt,
                                const Tensor& vt, const Tensor& wot, int64_t B, int64_t T,
                                double beta_mem, double one_minus_beta_mem, double beta_syn,
                                const Tensor& bm_v, const Tensor& obm_v, const Tensor& bs_v,
                                bool keep_state, bool keep_pre_reset, bool keep_current,
                                bool write_spikes,
                                double out_beta_mem, double out_one_minus_beta_mem,
                                double out_beta_syn, double out_u0, int64_t reduction,
                                bool write_trace) {
  const bool readout = wot.numel() > 0, keep_p = keep_state && keep_pre_reset;
  const bool keep_i = keep_state && keep_current;
  TORCH_CHECK(!readout || write_trace || reduction != NO_REDUCTION,
              "lif_forward: a readout writes its trace, its logits or both");
  TORCH_CHECK(write_spikes || readout, "lif_forward: a layer without readout writes spikes");
  const auto options = x.numel() > 0 ? x.options() : wt.options();
  const auto none = at::empty({0}, options);
  const int64_t N = x.numel() > 0 ? x.size(2) : wt.size(1), K = readout ? wot.size(1) : 0;
  const int64_t blocks = n_blocks(B);
  Tensor S = write_spikes ? empty_time_major(B, T, N, options) : none;
  Tensor U = keep_state ? empty_time_major(B, T, N, options) : none;
  Tensor P = keep_p ? empty_time_major(B, T, N, options) : none;
  Tensor I = keep_i ? empty_time_major(B, T, N, options) : none;
  Tensor Y = readout && write_trace ? empty_time_major(B, T, K, options) : none;
  const bool reduce = readout && reduction != NO_REDUCTION;
  Tensor logits = reduce ? at::empty({B, K}, options) : none;
  Tensor argmax = reduce ? at::zeros({B, K}, options.dtype(at::kInt)) : none;
  Tensor counts = at::zeros({B, N}, options);
  std::vector<Tensor> result = {S, U, P, I, counts};
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "lif_forward", [&] {
    TORCH_CHECK(x.numel() > 0 || in_begin.numel() == B * T,
                "lif_forward: projected input x, or the sparse form of B * T input rows");
    const Layer<scalar_t> L = layer_of<scalar_t>(x, in_begin, in_end, in_cols, in_vals, wt, vt,
                                                 B, N, beta_mem, one_minus_beta_mem, beta_syn,
                                                 bm_v, obm_v, bs_v);
    Readout<scalar_t> R;
    if (readout) {
      R = {K, scalar_t(out_beta_mem), scalar_t(out_one_minus_beta_mem), scalar_t(out_beta_syn),
           scalar_t(out_u0), wot.data_ptr<scalar_t>(), nullptr, reduction, T};
    }
    scalar_t* lp = reduce ? logits.data_ptr<scalar_t>() : nullptr;
    int32_t* ap = reduce ? argmax.data_ptr<int32_t>() : nullptr;
    // without a readout the spikes' sparse form is kept for the next layer and the gradients
    SparseBuilder<scalar_t> sparse(readout ? 0 : B * T, readout ? 0 : blocks);
    scalar_t* cp = counts.data_ptr<scalar_t>();
    with_flag(L.decay.per_neuron(), [&](auto per_neuron) {
      for_blocks(B, blocks, [&](int64_t c, int64_t b0, int64_t b1) {
        forward_entries<decltype(per_neuron)::value>(
            L, R, b0, b1, T, rows_of<scalar_t>(S, b0), rows_of<scalar_t>(U, b0),
            rows_of<scalar_t>(P, b0), rows_of<scalar_t>(I, b0), rows_of<scalar_t>(Y, b0),
            readout ? nullptr : &sparse, c, cp, lp, ap);
      });
    });
    if (readout) {
      result.push_back(Y);
      result.push_back(logits);
      result.push_back(argmax);
    } else {
      for (Tensor& t : as_list(sparse.finish(options))) result.push_back(t);
    }
  });
  return result;
}

// exp(x) of a float32 x with the same operations in the scalar and vector code (exp_vector),
// so its bits are the same in every build and do not depend on the C library: x = k ln 2 + r
// with k = round(x / ln 2) and |r| <= ln 2 / 2 (ln 2 in two parts, fused multiply-adds),
// exp(r) by its Taylor polynomial of degree 7 (truncation 5e-9 relative; Horner, fused
// multiply-adds), times 2^k in two factors 2^floor(k / 2) 2^(k - floor(k / 2)) so that
// results from the subnormal range to the overflow to +inf round once (Vec::pow2 builds them
// in the exponent bits by the same 1.5 2^23 shift as k). x is clamped to [-104, 89] first (exp
// is 0 below, +inf above); NaN stays NaN. Within 1 unit in the last place of exp
// (tests/test_engine.py; 0.93 at most on 20 000 001 points of [-110, 95]).
namespace expf32 {
constexpr float kLow = -104.0f, kHigh = 89.0f, kLog2e = 1.44269504088896341f;
constexpr float kShift = 12582912.0f;  // 1.5 2^23: x + kShift - kShift rounds x to an integer
constexpr float kLn2High = 0.693145751953125f, kLn2Low = 1.42860682030941723212e-6f;
constexpr float kC[8] = {1.0f, 1.0f, 1.0f / 2, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720,
                         1.0f / 5040};
}  // namespace expf32

inline float exp_float(float x) {
  using namespace expf32;
  x = kLow > x ? kLow : x;  // Vec::max(kLow, x), Vec::min(kHigh, x): NaN passes
  x = kHigh < x ? kHigh : x;
  const float k = std::fma(x, kLog2e, kShift) - kShift;
  const float r = std::fma(-k, kLn2Low, std::fma(-k, kLn2High, x));
  float p = kC[7];
  for (int j = 6; j >= 0; --j) p = std::fma(p, r, kC[j]);
  if (k != k) return p;  // NaN
  const float k1 = std::floor(k * 0.5f), k2 = k - k1;
  auto pow2 = [](float n) {  // 2^n for integral n in [-126, 127]
    const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  };
  return p * pow2(k1) * pow2(k2);
}

template <typename scalar_t>
SG_INLINE scalar_t exp_of(scalar_t x) {  // exp_float for float32, the C library's for float64
  if constexpr (std::is_same_v<scalar_t, float>) {
    return exp_float(x);
  } else {
    return std::exp(x);
  }
}

#if defined(SG_VECTORS)
SG_INLINE Vec::V exp_vector(Vec::V x) {  // exp_float on each lane, the same operations
  using namespace expf32;
  x = Vec::min(Vec::set1(kHigh), Vec::max(Vec::set1(kLow), x));
  const Vec::V shift = Vec::set1(kShift);
  const Vec::V k = Vec::sub(Vec::fmadd(x, Vec::set1(kLog2e), shift), shift);
  const Vec::V r = Vec::fnmadd(k, Vec::set1(kLn2Low), Vec::fnmadd(k, Vec::set1(kLn2High), x));
  Vec::V p = Vec::set1(kC[7]);
  for (int j = 6; j >= 0; --j) p = Vec::fmadd(p, r, Vec::set1(kC[j]));
  const Vec::V k1 = Vec::floor(Vec::mul(k, Vec::set1(0.5f))), k2 = Vec::sub(k, k1);
  return Vec::mul(Vec::mul(p, Vec::pow2(k1)), Vec::pow2(k2));
}
#endif

// exp_float of each element of a float32 tensor, lane by lane and in vectors (where the
// build has them; else lane by lane again): for the tests, which hold both to exp and each
// other.
std::vector<Tensor> exp_float_both(const Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "exp_float_both: float32 expected");
  const Tensor in = x.contiguous();
  Tensor scalar = at::empty_like(in), vector = at::empty_like(in);
  const float* xp = in.data_ptr<float>();
  float *sp = scalar.data_ptr<float>(), *vp = vector.data_ptr<float>();
  const int64_t n = in.numel();
  for (int64_t i = 0; i < n; ++i) sp[i] = exp_float(xp[i]);
  int64_t i = 0;
#if defined(SG_VECTORS)
  for (; i + Vec::lanes <= n; i += Vec::lanes) Vec::store(vp + i, exp_vector(Vec::load(xp + i)));
#endif
  for (; i < n; ++i) vp[i] = exp_float(xp[i]);
  return {scalar, vector};
}

// The built-in surrogates σ'(x) = scale * natural(x, slope) of spikegrad.surrogates, by
// index (0: none, the caller passes σ' evaluated by PyTorch instead).
enum Shape { GIVEN = 0, SUPERSPIKE, SIGMOID, ESSER, SUPERSPIKE_ASYMPTOTIC, EXPONENTIAL, ARCTAN,
             GAUSSIAN, TRUE_GRADIENT, CONSTANT };

template <int64_t shape, typename scalar_t>
SG_INLINE scalar_t surrogate(scalar_t x, scalar_t slope, scalar_t scale) {
  const scalar_t one = 1, ax = std::abs(x);
  if constexpr (shape == SUPERSPIKE) {
    return scale * (one / ((slope * ax + one) * (slope * ax + one)));
  } else if constexpr (shape == SIGMOID) {
    const scalar_t sig = one / (one + exp_of(-slope * x));
    return scale * (sig * (one - sig));
  } else if constexpr (shape == ESSER) {
    return scale * std::max(one - slope * ax, scalar_t(0));
  } else if constexpr (shape == SUPERSPIKE_ASYMPTOTIC) {
    return scale * (slope / ((slope * ax + one) * (slope * ax + one)));
  } else if constexpr (shape == EXPONENTIAL) {
    return scale * exp_of(-slope * ax);
  } else if constexpr (shape == ARCTAN) {
    const scalar_t z = scalar_t(0.5 * 3.14159265358979323846) * slope * x;
    return scale * (one / (one + z * z));
  } else if constexpr (shape == GAUSSIAN) {
    return scale * exp_of(scalar_t(-0.5) * (slope * x) * (slope * x));
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

// σ'(u - 1) of the built-in surrogate `shape` for one row.
template <int64_t shape, typename scalar_t>
SG_INLINE void surrogate_row(int64_t N, const scalar_t* __restrict__ u, scalar_t* __restrict__ out,
                          scalar_t slope, scalar_t scale) {
  for (int64_t k = 0; k < N; ++k) out[k] = surrogate<shape>(u[k] - scalar_t(1), slope, scale);
}

// Asks for the cache lines of row[0..N) ahead of their use (rows of earlier steps lie far
// back: too far for the hardware prefetcher to guess).
template <typename scalar_t>
SG_INLINE void prefetch_row(const scalar_t* row, int64_t N) {
  if (!row) return;
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t offset = 0; offset < N * int64_t(sizeof(scalar_t)); offset += 64) {
    __builtin_prefetch(p + offset);
  }
}

// What the backward loop reads and writes besides the layer's own state.
template <typename scalar_t>
struct Adjoint {
  Rows<scalar_t> grad;                  // dL/dS (time-major), or none
  const scalar_t* grad_const = nullptr; // [B, N]: the part of dL/dS that is the same each step
  Rows<scalar_t> dy;                    // dL/dU_out[1..T] (time-major, K wide), or none
  Rows<scalar_t> dx;                    // receives dL/dx[n] = dI[n+1], or none
  const scalar_t* v = nullptr;          // V [N, N] when gradients flow through the recurrence
  int64_t shape = SUPERSPIKE;
  scalar_t slope = 0, scale = 0;
  const scalar_t* grad_logits = nullptr;  // dL/dlogits [B, K] (a reduced readout), or none
  const int32_t* argmax = nullptr;        // the step of each maximum [B, K] (MAX)
  const scalar_t* sg = nullptr;         // σ' given for the steps [t0, t1) ([t1 - t0, B, N])
  scalar_t* dwt = nullptr;              // this block's share of dW^T [C, N] (sparse input)
  scalar_t* dvt = nullptr;              // of dV^T [N, N]
  scalar_t* dwot = nullptr;             // of dW_out^T [N, K]
  scalar_t* dbm = nullptr;              // of dL/dβ_m [N] (per-neuron decays, learned)
  scalar_t* dbs = nullptr;              // of dL/dβ_s [N]
};

// For each batch entry b of [b0, b1) (with the adjoints du, di ([nb, N]) and lu, li ([nb, K])
// carried in from step t1): 1 + the last step before t1 at which a gradient reaches it (t0
// when none does). Its adjoints stay exactly zero until then, and those steps are skipped.
template <typename scalar_t>
std::vector<int64_t> last_gradient_steps(const Layer<scalar_t>& L, const Readout<scalar_t>& R,
                                         const Adjoint<scalar_t>& A, int64_t b0, int64_t b1,
                                         int64_t t0, int64_t t1, const scalar_t* du,
                                         const scalar_t* di, const scalar_t* lu,
                                         const scalar_t* li) {
  const int64_t N = L.N, K = R.K;
  std::vector<int64_t> last(b1 - b0, t0);
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t j = b - b0;
    if ((A.grad_const && any_nonzero(A.grad_const + b * N, N)) || any_nonzero(du + j * N, N) ||
        any_nonzero(di + j * N, N) || (K > 0 && (any_nonzero(lu + j * K, K) ||
                                                  any_nonzero(li + j * K, K)))) {
      last[j] = t1;
      continue;
    }
    for (int64_t n = t1 - 1; n >= t0; --n) {
      if ((A.grad.base && any_nonzero(A.grad(n, b), N)) ||
          (K > 0 && A.dy.base && any_nonzero(A.dy(n, b), K))) {
        last[j] = n + 1;
        break;
      }
    }
    if (A.grad_logits && any_nonzero(A.grad_logits + b * K, K)) {  // the logits' steps
      int64_t step = R.T - 1;  // SUM, MEAN: every step; LAST: the last
      if (R.reduction == MAX) step = *std::max_element(A.argmax + b * K, A.argmax + (b + 1) * K);
      if (step >= t0) last[j] = std::max(last[j], std::min(t1, step + 1));
    }
  }
  return last;
}

// The backward loop of the batch entries [b0, b1) over steps t1 - 1 down to t0, from the
// layer's U (and P; I when the decays' gradients are asked for, A.dbm) rows; carries du, di
// ([nb, N]) and lu, li ([nb, K]) in place. PN: per-neuron decays.
template <bool PN, typename scalar_t>
void backward_entries(const Layer<scalar_t>& L, const Readout<scalar_t>& R,
                      const Adjoint<scalar_t>& A, int64_t b0, int64_t b1, int64_t t0, int64_t t1,
                      const Rows<scalar_t>& U, const Rows<scalar_t>& P, const Rows<scalar_t>& I,
                      scalar_t* du, scalar_t* di, scalar_t* lu, scalar_t* li) {
  const int64_t N = L.N, K = R.K, nb = b1 - b0;
  const std::vector<int64_t> last = last_gradient_steps(L, R, A, b0, b1, t0, t1, du, di, lu, li);
  std::vector<scalar_t> sgbuf(N), gbuf(N), di_next(A.dvt ? N : 0);
  std::vector<scalar_t> rec(A.v ? nb * N : 0);
  // with a readout: the gradient reaching S[n] ([nb, N]) and dx_out[n] ([nb, K]) of the block
  std::vector<scalar_t> g_block(K > 0 ? nb * N : 0), dxo_block(nb * K);
  std::vector<int32_t> idx(N + 16);
  // The gradient reaching S[n] of entry b from outside the recurrence and the reset, in out
  // (or, without a readout, the row of grad itself when there is nothing to add to it).
  auto outside_gradient = [&](int64_t n, int64_t b, scalar_t* out) -> const scalar_t* {
    const scalar_t* gr = A.grad(n, b);
    const scalar_t* gc = A.grad_const ? A.grad_const + b * N : nullptr;
    if (gr && !gc && K == 0) return gr;
    if (gr && gc) {
      for (int64_t k = 0; k < N; ++k) out[k] = gr[k] + gc[k];
    } else if (gr || gc) {
      std::copy_n(gr ? gr : gc, N, out);
    } else {
      std::fill_n(out, N, scalar_t(0));
    }
    return out;
  };
  for (int64_t n = t1 - 1; n >= t0; --n) {
    // through the recurrence: dI[n+1] V for the whole block at once
    if (A.v) block_times_matrix<false>(nb, N, N, di, A.v, rec.data());
    if (K > 0) {  // the readout's adjoint, and the gradient dx_out[n] W_out it sends to S[n]
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t j = b - b0;
        scalar_t* dxo = dxo_block.data() + j * K;  // dx_out[n] = λ_I, before this step
        if (n >= last[j]) {
          std::fill_n(dxo, K, scalar_t(0));
          std::fill_n(g_block.data() + j * N, N, scalar_t(0));
          continue;
        }
        outside_gradient(n, b, g_block.data() + j * N);
        readout_adjoint_row(K, R.bm, R.obm, R.bs, lu + j * K, li + j * K, A.dy(n, b),
                            backward_fold(R, b, n, A.grad_logits, A.argmax), dxo);
      }
      block_times_matrix<true>(nb, K, N, dxo_block.data(), R.wo, g_block.data());
    }
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t q = n * L.B + b, j = b - b0;
      scalar_t *dur = du + j * N, *dir = di + j * N;  // dU[n+1], dI[n+1] = dx[n]
      if (n >= last[j]) {  // nothing reaches entry b from step n on
        if (A.dx.base) std::fill_n(A.dx(n, b), N, scalar_t(0));
        continue;
      }
      if (n > t0) {  // the rows of the previous step are read next: fetch them now
        prefetch_row(U(n - 1, b), N);
        prefetch_row(P(n - 1, b), N);
        prefetch_row(I(n - 1, b), N);
        prefetch_row(A.grad(n - 1, b), N);
      }
      const scalar_t* g = K > 0 ? g_block.data() + j * N : outside_gradient(n, b, gbuf.data());
      if (A.dx.base) std::copy_n(dir, N, A.dx(n, b));
      if (A.dwt) scatter_rows(N, A.dwt, dir, L.in.cols, L.in.vals, L.in.begin[q], L.in.end[q]);
      const scalar_t* ur = U(n, b);
      const scalar_t* sgr = sgbuf.data();
      if (A.sg) {
        sgr = A.sg + ((n - t0) * L.B + b) * N;
      } else {
        with_shape(A.shape, [&](auto sh) {
          if constexpr (sh.value != GIVEN) {
            surrogate_row<sh.value>(N, ur, sgbuf.data(), A.slope, A.scale);
          }
        });
      }
      // dV and dW_out take dI[n+1] and dx_out[n] at the neurons that spiked at step n
      if (A.dvt) std::copy_n(dir, N, di_next.data());  // backward_row moves dI on to dI[n]
      const int64_t m = backward_row<PN>(N, L.decay, g, A.v ? rec.data() + j * N : nullptr,
                                         P(n, b), ur, A.dbm ? I(n, b) : nullptr, sgr, dur, dir,
                                         A.dbm, A.dbs, idx.data());
      if (A.dvt) scatter_rows<scalar_t>(N, A.dvt, di_next.data(), idx.data(), nullptr, 0, m);
      if (A.dwot) {
        scatter_rows<scalar_t>(K, A.dwot, dxo_block.data() + j * K, idx.data(), nullptr, 0, m);
      }
    }
  }
}

#if defined(SG_VECTORS)
// σ'(u - 1) of the built-in surrogate `shape` on the lanes of u, with the operations of
// surrogate on each element.
SG_INLINE Vec::V surrogate_vector(int64_t shape, Vec::V u, float slope, float scale) {
  using V = Vec::V;
  const V one = Vec::set1(1.0f), x = Vec::sub(u, one), ax = Vec::abs(x);
  const V t = Vec::add(Vec::mul(Vec::set1(slope), ax), one);  // slope |x| + 1
  switch (shape) {
    case SUPERSPIKE: return Vec::mul(Vec::set1(scale), Vec::div(one, Vec::mul(t, t)));
    case SUPERSPIKE_ASYMPTOTIC:
      return Vec::mul(Vec::set1(scale), Vec::div(Vec::set1(slope), Vec::mul(t, t)));
    case ESSER:  // std::max(1 - slope |x|, 0)
      return Vec::mul(Vec::set1(scale),
                      Vec::max(Vec::zero(), Vec::sub(one, Vec::mul(Vec::set1(slope), ax))));
    case ARCTAN: {
      const V z = Vec::mul(Vec::set1(float(0.5 * 3.14159265358979323846) * slope), x);
      return Vec::mul(Vec::set1(scale), Vec::div(one, Vec::add(one, Vec::mul(z, z))));
    }
    case SIGMOID: {
      const V sig = Vec::div(one, Vec::add(one, exp_vector(Vec::mul(Vec::set1(-slope), x))));
      return Vec::mul(Vec::set1(scale), Vec::mul(sig, Vec::sub(one, sig)));
    }
    case EXPONENTIAL:
      return Vec::mul(Vec::set1(scale), exp_vector(Vec::mul(Vec::set1(-slope), ax)));
    case GAUSSIAN: {
      const V z = Vec::mul(Vec::set1(slope), x);
      return Vec::mul(Vec::set1(scale), exp_vector(Vec::mul(Vec::mul(Vec::set1(-0.5f), z), z)));
    }
    case TRUE_GRADIENT: return Vec::zero();
    default: return Vec::set1(scale);  // CONSTANT
  }
}

// The backward loop of one batch entry b of a layer without recurrence, for G vectors of
// neurons from vector v0 on (the last one masked when LAST_MASKED), over the steps steps - 1
// down to 0, with dU and dI in registers: U (and P) from the entry's rows u_rows, p_rows
// ([steps, N]), the readout's dx_out[n] from dxo (rows of dk). Writes
// dx[n] = dI[n+1] to A.dx and, at the steps with input (slot[n] >= 0), to saved[slot[n]]
// (for dW, summed later in the loops' order; rows of whole vectors, whose lanes past N are
// not used). The operations of backward_entries on each element, in their order.
template <bool PN, int G, bool LAST_MASKED>
SG_INLINE void backward_vectors(const Layer<float>& L, const Readout<float>& R,
                                const Adjoint<float>& A, int64_t b, int64_t v0, int64_t steps,
                                const float* u_rows, const float* p_rows, const float* dxo,
                                int64_t dk, const int64_t* slot, float* saved, float* du_row,
                                float* di_row) {
  using V = Vec::V;
  constexpr int64_t W = Vec::lanes;
  const int64_t N = L.N, K = R.K, k0 = v0 * W, saved_row = (N + W - 1) / W * W;
  const Group<G, LAST_MASKED> group(N, k0);
  auto load = [&](const float* p, int g) { return group.load(p, g); };
  auto store = [&](float* p, int g, V v) { group.store(p, g, v); };
  const V one = Vec::set1(1.0f);
  V bm[G], obm[G], bs[G], du[G], di[G];
  group.template decays<PN>(L.decay, k0, bm, obm, bs);
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g) {
    du[g] = load(du_row + k0 + W * g, g);
    di[g] = load(di_row + k0 + W * g, g);
  }
  const float* grad_const = A.grad_const ? A.grad_const + b * N : nullptr;
  for (int64_t n = steps - 1; n >= 0; --n) {
    const float* gr = A.grad(n, b);
    float* dx = A.dx(n, b);
    V g[G];
#pragma GCC unroll 4
    for (int g_ = 0; g_ < G; ++g_) {  // the gradient from outside: dL/dS (+ the counts')
      const int64_t k = k0 + W * g_;
      g[g_] = gr && grad_const ? Vec::add(load(gr + k, g_), load(grad_const + k, g_))
              : gr             ? load(gr + k, g_)
              : grad_const     ? load(grad_const + k, g_)
                               : Vec::zero();
    }
    for (int64_t k = 0; k < K; ++k) {  // + dx_out[n] W_out (block_times_matrix's order)
      const V a = Vec::set1(dxo[n * dk + k]);
      const float* row = R.wo + k * N + k0;
#pragma GCC unroll 4
      for (int g_ = 0; g_ < G; ++g_) g[g_] = Vec::fmadd(a, load(row + W * g_, g_), g[g_]);
    }
#pragma GCC unroll 4
    for (int g_ = 0; g_ < G; ++g_) {
      const int64_t k = k0 + W * g_;
      const V uk = load(u_rows + n * N + k, g_);
      const Vec::Mask spike = Vec::greater(uk, one, group.mask(g_));
      if (p_rows) g[g_] = Vec::sub(g[g_], Vec::mul(du[g_], load(p_rows + n * N + k, g_)));
      const V a = Vec::where_not(spike, du[g_]);  // du (1 - S)
      const V sg = surrogate_vector(A.shape, uk, A.slope, A.scale);
      const V gs = Vec::mul(g[g_], sg);
      if (dx) store(dx + k, g_, di[g_]);
      if (slot[n] >= 0) Vec::store(saved + slot[n] * saved_row + k, di[g_]);
      du[g_] = Vec::add(Vec::mul(bm[g_], a), gs);
      di[g_] = Vec::add(Vec::mul(obm[g_], a), Vec::mul(bs[g_], di[g_]));
    }
  }
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g) {
    store(du_row + k0 + W * g, g, du[g]);
    store(di_row + k0 + W * g, g, di[g]);
  }
}

// The readout's adjoint of batch entry b over the steps steps - 1 down to 0, from λ_U = lu,
// λ_I = li ([K], carried in place): dx_out[n] into the rows of dk of dxo. With C vectors
// (C > 0) λ_U and λ_I stay in registers, with the operations of readout_adjoint_row on each
// element in their order; C = 0 runs readout_adjoint_row at each step.
template <int C>
SG_INLINE void readout_adjoint_steps(const Readout<float>& R, const Adjoint<float>& A,
                                     int64_t b, int64_t steps, float* lu, float* li, float* dxo,
                                     int64_t dk) {
  const int64_t K = R.K;
  if constexpr (C == 0) {
    for (int64_t n = steps - 1; n >= 0; --n) {
      readout_adjoint_row(K, R.bm, R.obm, R.bs, lu, li, A.dy(n, b),
                          backward_fold(R, b, n, A.grad_logits, A.argmax), dxo + n * dk);
    }
  } else {
    using V = Vec::V;
    constexpr int64_t W = Vec::lanes;
    const Vec::Mask full = Vec::all(), last = Vec::below(K - W * (C - 1));
    const V bm = Vec::set1(R.bm), obm = Vec::set1(R.obm), bs = Vec::set1(R.bs);
    const float* grad = A.grad_logits ? A.grad_logits + b * K : nullptr;
    V lu_v[C], li_v[C], g[C], first[C];
    alignas(64) float steps_of[C * W] = {};
    if (grad && R.reduction == MAX) {
      for (int64_t k = 0; k < K; ++k) steps_of[k] = float(A.argmax[b * K + k]);
    }
#pragma GCC unroll 3
    for (int r = 0; r < C; ++r) {
      const Vec::Mask mr = r == C - 1 ? last : full;
      lu_v[r] = Vec::load(lu + W * r, mr);
      li_v[r] = Vec::load(li + W * r, mr);
      g[r] = grad ? Vec::load(grad + W * r, mr) : Vec::zero();
      first[r] = Vec::load(steps_of + W * r);
    }
    for (int64_t n = steps - 1; n >= 0; --n) {
      const float* dy = A.dy(n, b);
#pragma GCC unroll 3
      for (int r = 0; r < C; ++r) {
        V d = dy ? Vec::load(dy + W * r, r == C - 1 ? last : full) : Vec::zero();
        if (grad) {  // logits_gradient
          V from_logits = Vec::zero();
          switch (R.reduction) {
            case MAX:
              from_logits = Vec::where(Vec::equal(first[r], Vec::set1(float(n))), g[r]);
              break;
            case SUM: from_logits = g[r]; break;
            case MEAN: from_logits = Vec::div(g[r], Vec::set1(float(R.T))); break;
            case LAST: from_logits = n == R.T - 1 ? g[r] : Vec::zero(); break;
            default: break;
          }
          d = Vec::add(d, from_logits);
        }
        const V uo = Vec::add(lu_v[r], d);
        Vec::store(dxo + n * dk + W * r, li_v[r]);
        lu_v[r] = Vec::mul(bm, uo);
        li_v[r] = Vec::add(Vec::mul(obm, uo), Vec::mul(bs, li_v[r]));
      }
    }
#pragma GCC unroll 3
    for (int r = 0; r < C; ++r) {
      const Vec::Mask mr = r == C - 1 ? last : full;
      Vec::store(lu + W * r, mr, lu_v[r]);
      Vec::store(li + W * r, mr, li_v[r]);
    }
  }
}

// backward_entries over the steps t1 - 1 down to 0 for a float32 layer without recurrence
// whose U (and P) are recomputed and whose decays are not learned: each batch entry runs the
// readout's adjoint over its steps (dx_out[n] into a buffer), recomputes its U (and P) by
// neurons (forward_vectors, into rows of its own that stay in cache) and runs its backward
// loop by neurons (backward_vectors); then dW and dW_out are summed over the steps and entries
// in the order of backward_entries (dW^T: [columns, N]). The same bits as backward_entries.
template <bool PN>
void backward_entries_by_neuron(const Layer<float>& L, const Readout<float>& R,
                                const Adjoint<float>& A, int64_t b0, int64_t b1, int64_t t1,
                                bool reset_grad, int64_t columns, float* du, float* di,
                                float* lu, float* li) {
  const int64_t N = L.N, K = R.K, nb = b1 - b0, nv = (N + Vec::lanes - 1) / Vec::lanes;
  const int64_t groups = (nv + 3) / 4;
  const std::vector<int64_t> last = last_gradient_steps(L, R, A, b0, b1, 0, t1, du, di, lu, li);
  // the steps of each entry whose dx[n] dW takes (those with input), numbered
  std::vector<int64_t> slot(nb * t1, -1);
  int64_t slots = 0;
  if (A.dwt) {
    for (int64_t j = 0; j < nb; ++j) {
      for (int64_t n = 0; n < last[j]; ++n) {
        const int64_t q = n * L.B + b0 + j;
        if (L.in.begin[q] < L.in.end[q]) slot[j * t1 + n] = slots++;
      }
    }
  }
  // dx_out[n] of each entry, in rows of whole vectors (C > 0) or of K
  const int64_t readout_vectors = (K + Vec::lanes - 1) / Vec::lanes;
  const int64_t dk = readout_vectors <= 3 ? readout_vectors * Vec::lanes : K;
  const int64_t np = nv * Vec::lanes;  // N in whole vectors
  const auto saved = scratch<float>(slots * np), dxo = scratch<float>(nb * t1 * dk);
  const auto u_rows = scratch<float>(t1 * N), p_rows = scratch<float>(reset_grad ? t1 * N : 0);
  const auto bits = scratch<uint32_t>(A.dwot ? nb * t1 * nv : nv);
  const Rows<float> none;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t j = b - b0, steps = last[j];
    if (A.dx.base) {  // nothing reaches entry b from step `steps` on
      for (int64_t n = steps; n < t1; ++n) std::fill_n(A.dx(n, b), N, 0.0f);
    }
    if (steps == 0) continue;
    float* dxo_j = dxo.get() + j * t1 * dk;
    with_readout_vectors(readout_vectors, [&](auto C) {
      readout_adjoint_steps<C.value>(R, A, b, steps, lu + j * K, li + j * K, dxo_j, dk);
    });
    const Rows<float> U{u_rows.get(), N, N, b};
    const Rows<float> P = reset_grad ? Rows<float>{p_rows.get(), N, N, b} : none;
    uint32_t* bits_j = A.dwot ? bits.get() + j * t1 * nv : bits.get();
    for (int64_t gi = 0; gi < groups; ++gi) {
      const int64_t v0 = nv * gi / groups, v1 = nv * (gi + 1) / groups;
      with_group(v1 - v0, v1 == nv && N % Vec::lanes != 0, [&](auto G, auto masked) {
        constexpr int g = decltype(G)::value;
        constexpr bool m = decltype(masked)::value;
        forward_vectors<PN, g, m>(L, b, v0, A.dwot ? nv : 0, steps, none, U, P, none, bits_j);
        backward_vectors<PN, g, m>(L, R, A, b, v0, steps, u_rows.get(),
                                   reset_grad ? p_rows.get() : nullptr, dxo_j, dk,
                                   slot.data() + j * t1, saved.get(), du + j * N, di + j * N);
      });
    }
  }
  // dW^T += S_in[n]^T dx[n] and dW_out^T += S[n]^T dx_out[n], steps latest first, then
  // entries. Both are summed in rows of whole vectors (no masked loads and stores): dW^T in
  // rows of np (when N is not a whole number of vectors), dW_out^T in rows of dk (when dx_out
  // is in rows of whole vectors), from +0 as A.dwt and A.dwot would be, copied there at the end
  std::vector<float> dwt_rows(A.dwt && np != N ? columns * np : 0, 0.0f);
  float* dwt = np != N ? dwt_rows.data() : A.dwt;
  const bool padded = A.dwot && dk % Vec::lanes == 0;
  std::vector<float> dwot_rows(padded ? N * dk : 0, 0.0f);
  std::vector<int32_t> idx(N + 16);
  for (int64_t n = t1 - 1; n >= 0; --n) {
    for (int64_t j = 0; j < nb; ++j) {
      if (n >= last[j]) continue;
      const int64_t q = n * L.B + b0 + j;
      if (A.dwt && slot[j * t1 + n] >= 0) {
        scatter_rows(np, dwt, saved.get() + slot[j * t1 + n] * np, L.in.cols, L.in.vals,
                     L.in.begin[q], L.in.end[q]);
      }
      if (!A.dwot) continue;
      const uint32_t* row = bits.get() + (j * t1 + n) * nv;
      const float* dxo_row = dxo.get() + (j * t1 + n) * dk;
      int64_t m = 0;
      for (int64_t v = 0; v < nv; ++v) {
        m = Vec::append_bits(row[v], v * Vec::lanes, idx.data(), m);
      }
      if (!padded) {
        scatter_rows<float>(K, A.dwot, dxo_row, idx.data(), nullptr, 0, m);
        continue;
      }
      for (int64_t e = 0; e < m; ++e) {
        float* out = dwot_rows.data() + int64_t(idx[e]) * dk;
        for (int64_t k = 0; k < dk; k += Vec::lanes) {
          Vec::store(out + k, Vec::add(Vec::load(out + k), Vec::load(dxo_row + k)));
        }
      }
    }
  }
  for (int64_t c = 0; A.dwt && np != N && c < columns; ++c) {
    std::copy_n(dwt_rows.data() + c * np, N, A.dwt + c * N);
  }
  for (int64_t i = 0; padded && i < N; ++i) {
    std::copy_n(dwot_rows.data() + i * dk, K, A.dwot + i * K);
  }
}
#endif

// BPTT of a LIF layer (and of the leaky readout that reads it, when wo is given). Tensors
// [B, T, N] are time-major. The gradient reaching the layer's spikes is the sum of: grad
// (dL/dS, or empty), grad_const ([B, N], the same at every step, or empty), and, with a
// readout, dx_out[n] W_out (wo = W_out [K, N]) from the readout's adjoint, driven by dy =
// dL/dU_out[1..T] ([B, T, K], or empty) plus what the gradient of the reduced logits
// (grad_logits [B, K], or empty; argmax for the maximum) gives at each step:
//   u     = λ_U + dy[n],   dx_out[n] = λ_I,   λ_U <- β_o u,   λ_I <- (1 - β_o) u + β_so λ_I
// The layer's adjoint, backwards in time:
//   g     = dL/dS[n] + dI[n+1] V - dU[n+1] P[n]     (recurrence / reset terms when enabled)
//   a     = dU[n+1] (1 - S[n])
//   dU[n] = β_m a + g σ'[n],   dI[n] = (1 - β_m) a + β_s dI[n+1]
// U (and P, for a differentiable reset: reset_grad) come from one of two places:
// - stored by the forward pass (u, p given): the steps [t0, t1) are run, σ' is the built-in
//   `shape` or given as sg ([t1 - t0, B, N], shape GIVEN), and the adjoints du = dU[t1],
//   di = dI[t1] ([B, N]) and lu = λ_U, li = λ_I ([B, K]) are carried in place from call to
//   call (latest steps first);
// - recomputed (u empty, built-in shapes only): each block re-runs the layer's forward loop
//   for its batch entries into a buffer of its own (a block's state, close in cache), then
//   runs their backward loop over the steps [0, t1), as it would with the stored state, so
//   that both ways give the same bits. The layer is driven as in lif_forward (x, or the
//   sparse input form and wt; vt).
// dx (when not empty) receives dL/dx[n] = dI[n+1]; v = V [N, N] when gradients flow through
// the recurrence (else empty). Returns dW^T = Σ_n S_in[n]^T dx[n] ([C, N], from the sparse
// input form, when want_w), dV^T = Σ_n S[n]^T dx[n] ([N, N], when want_v) and dW_out^T =
// Σ_n S[n]^T dx_out[n] ([N, K], when want_wo) and, when want_decays, the gradients of the
// per-neuron decays (bm_v, obm_v, bs_v as in lif_forward; the numbers beta_mem, ... when
// they are empty) dL/dβ_m = Σ_n a[n] (U[n] - I[n]) and dL/dβ_s = Σ_n dI[n+1] I[n] ([N]
// each, summed over the batch; I[n] from cur, stored by the forward pass with U, or
// recomputed with it), each summed over blocks in block order; empty tensors for the others.
std::vector<Tensor> lif_backward(
    const Tensor& grad, const Tensor& grad_const, const Tensor& dy, const Tensor& grad_logits,
    const Tensor& argmax, int64_t reduction, const Tensor& wo,
    const Tensor& x, const Tensor& in_begin, const Tensor& in_end, const Tensor& in_cols,
    const Tensor& in_vals, const Tensor& wt, const Tensor& vt, const Tensor& u, const Tensor& p,
    const Tensor& sg, int64_t shape, double slope, double scale, const Tensor& v, Tensor du,
    Tensor di, Tensor lu, Tensor li, Tensor dx, int64_t C, int64_t T_total, bool reset_grad,
    bool want_w,
    bool want_v, bool want_wo, int64_t t0, int64_t t1, double beta_mem,
    double one_minus_beta_mem, double beta_syn, double out_beta_mem,
    double out_one_minus_beta_mem, double out_beta_syn, const Tensor& bm_v, const Tensor& obm_v,
    const Tensor& bs_v, const Tensor& cur, bool want_decays) {
  const bool stored = u.numel() > 0, readout = wo.numel() > 0;
  const bool has_logits = grad_logits.numel() > 0;
  TORCH_CHECK(!has_logits || (grad_logits.is_contiguous() && argmax.is_contiguous() &&
                              reduction != NO_REDUCTION),
              "lif_backward: contiguous logits gradient and argmax expected");
  TORCH_CHECK(stored || (shape != GIVEN && t0 == 0),
              "lif_backward: a surrogate given as values needs the stored membrane");
  TORCH_CHECK((!stored || is_time_major(u)) && (!stored || !reset_grad || is_time_major(p)) &&
                  (grad.numel() == 0 || is_time_major(grad)) &&
                  (dx.numel() == 0 || is_time_major(dx)) &&
                  (dy.numel() == 0 || is_time_major(dy)) &&
                  du.is_contiguous() && di.is_contiguous() && lu.is_contiguous() &&
                  li.is_contiguous() && sg.is_contiguous() &&
                  (grad_const.numel() == 0 || grad_const.is_contiguous()) &&
                  (!readout || wo.is_contiguous()) && (v.numel() == 0 || v.is_contiguous()),
              "lif_backward: time-major [B, T, N] and contiguous tensors expected");
  TORCH_CHECK(!want_w || in_begin.numel() > 0, "lif_backward: dW needs the sparse input form");
  TORCH_CHECK(!want_wo || readout, "lif_backward: dW_out needs the readout");
  TORCH_CHECK(!want_decays || !stored || is_time_major(cur),
              "lif_backward: the decays' gradients need the stored current I with U");
  const int64_t B = du.size(0), N = du.size(1), K = readout ? wo.size(0) : 0;
  const int64_t blocks = n_blocks(B);
  const auto options = du.options();
  const auto none = at::empty({0}, options);
  // each block's partial sums, cleared by the block (cleared_part)
  Tensor dwt = want_w ? at::empty({blocks, C, N}, options) : none;
  Tensor dvt = want_v ? at::empty({blocks, N, N}, options) : none;
  Tensor dwot = want_wo ? at::empty({blocks, N, K}, options) : none;
  Tensor dbm = want_decays ? at::empty({blocks, N}, options) : none;
  Tensor dbs = want_decays ? at::empty({blocks, N}, options) : none;
  AT_DISPATCH_FLOATING_TYPES(du.scalar_type(), "lif_backward", [&] {
    TORCH_CHECK(stored || x.numel() > 0 || in_begin.numel() > 0,
                "lif_backward: recomputing needs the layer's input");
    const Layer<scalar_t> L = layer_of<scalar_t>(x, in_begin, in_end, in_cols, in_vals, wt, vt,
                                                 B, N, beta_mem, one_minus_beta_mem, beta_syn,
                                                 bm_v, obm_v, bs_v);
    Readout<scalar_t> R;
    if (readout) {
      R = {K, scalar_t(out_beta_mem), scalar_t(out_one_minus_beta_mem), scalar_t(out_beta_syn),
           scalar_t(0), nullptr, wo.data_ptr<scalar_t>(), reduction, T_total};
    }
    const Readout<scalar_t> no_readout;
    with_flag(L.decay.per_neuron(), [&](auto per_neuron) {
      constexpr bool PN = decltype(per_neuron)::value;
      for_blocks(B, blocks, [&](int64_t c, int64_t b0, int64_t b1) {
        Adjoint<scalar_t> A;
        A.grad = rows_of<scalar_t>(grad, b0);
        A.grad_const = grad_const.numel() > 0 ? grad_const.data_ptr<scalar_t>() : nullptr;
        A.dy = rows_of<scalar_t>(dy, b0);
        if (has_logits) {
          A.grad_logits = grad_logits.data_ptr<scalar_t>();
          A.argmax = argmax.numel() ? argmax.data_ptr<int32_t>() : nullptr;
        }
        A.dx = rows_of<scalar_t>(dx, b0);
        if (v.numel() > 0) A.v = v.data_ptr<scalar_t>();
        A.shape = shape;
        A.slope = scalar_t(slope);
        A.scale = scalar_t(scale);
        A.sg = shape == GIVEN ? sg.data_ptr<scalar_t>() : nullptr;
        if (want_w) A.dwt = cleared_part<scalar_t>(dwt, c);
        if (want_v) A.dvt = cleared_part<scalar_t>(dvt, c);
        if (want_wo) A.dwot = cleared_part<scalar_t>(dwot, c);
        if (want_decays) {
          A.dbm = cleared_part<scalar_t>(dbm, c);
          A.dbs = cleared_part<scalar_t>(dbs, c);
        }
        scalar_t *dup = du.data_ptr<scalar_t>(), *dip = di.data_ptr<scalar_t>();
        scalar_t *lup = lu.data_ptr<scalar_t>(), *lip = li.data_ptr<scalar_t>();
        if (stored) {
          backward_entries<PN>(L, R, A, b0, b1, t0, t1, rows_of<scalar_t>(u, b0),
                               reset_grad ? rows_of<scalar_t>(p, b0) : Rows<scalar_t>{},
                               want_decays ? rows_of<scalar_t>(cur, b0) : Rows<scalar_t>{},
                               dup + b0 * N, dip + b0 * N, lup + b0 * K, lip + b0 * K);
          return;
        }
        // the block's U (P, I) for steps [0, t1) in a buffer of its own, then the backward
        // loop over the block as with stored state: the same order of sums, the same bits
#if defined(SG_VECTORS)
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (!L.vt && !want_decays) {
            backward_entries_by_neuron<PN>(L, R, A, b0, b1, t1, reset_grad, C, dup + b0 * N,
                                           dip + b0 * N, lup + b0 * K, lip + b0 * K);
            return;
          }
        }
#endif
        const int64_t nb = b1 - b0;
        std::vector<scalar_t> u_local(nb * t1 * N), p_local(reset_grad ? nb * t1 * N : 0);
        std::vector<scalar_t> i_local(want_decays ? nb * t1 * N : 0);
        const Rows<scalar_t> U{u_local.data(), nb * N, N, b0};
        const Rows<scalar_t> P = reset_grad ? Rows<scalar_t>{p_local.data(), nb * N, N, b0}
                                            : Rows<scalar_t>{};
        const Rows<scalar_t> I = want_decays ? Rows<scalar_t>{i_local.data(), nb * N, N, b0}
                                             : Rows<scalar_t>{};
        forward_entries<PN>(L, no_readout, b0, b1, t1, Rows<scalar_t>{}, U, P, I,
                            Rows<scalar_t>{}, static_cast<SparseBuilder<scalar_t>*>(nullptr), 0);
        backward_entries<PN>(L, R, A, b0, b1, 0, t1, U, P, I, dup + b0 * N, dip + b0 * N,
                             lup + b0 * K, lip + b0 * K);
      });
    });
  });
  return {want_w ? sum_blocks(dwt) : dwt, want_v ? sum_blocks(dvt) : dvt,
          want_wo ? sum_blocks(dwot) : dwot, want_decays ? sum_blocks(dbm) : dbm,
          want_decays ? sum_blocks(dbs) : dbs};
}

// 1 + the last step n at which t ([B, T, M], time-major) is non-zero for some batch entry
// (0 if none); scans backwards and stops at the first non-zero.
int64_t last_active_step(const Tensor& t) {
  TORCH_CHECK(is_time_major(t), "last_active_step: time-major [B, T, M] input expected");
  const int64_t B = t.size(0), T = t.size(1), M = t.size(2);
  int64_t last = 0;
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "last_active_step", [&] {
    const scalar_t* tp = t.data_ptr<scalar_t>();
    for (int64_t n = T - 1; n >= 0 && last == 0; --n) {
      if (any_nonzero(tp + n * B * M, B * M)) last = n + 1;
    }
  });
  return last;
}

// The leaky readout as a linear filter of x [B, T, K] (time-major); returns U[1..T],
// time-major, from U[0] = u0, I[0] = 0:
//   U[n+1] = β_m U[n] + (1 - β_m) I[n],   I[n+1] = β_s I[n] + x[n].
Tensor leaky_filter(const Tensor& x, double beta_mem, double one_minus_beta_mem,
                    double beta_syn, double u0) {
  TORCH_CHECK(is_time_major(x), "leaky_filter: time-major [B, T, K] expected");
  const int64_t B = x.size(0), T = x.size(1), K = x.size(2);
  Tensor y = empty_time_major(B, T, K, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "leaky_filter", [&] {
    const scalar_t bm = scalar_t(beta_mem), obm = scalar_t(one_minus_beta_mem);
    const scalar_t bs = scalar_t(beta_syn);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    for_blocks(B, n_blocks(B), [&](int64_t, int64_t b0, int64_t b1) {
      std::vector<scalar_t> u((b1 - b0) * K, scalar_t(u0)), i((b1 - b0) * K, scalar_t(0));
      for (int64_t n = 0; n < T; ++n) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t off = (n * B + b) * K;
          scalar_t *ub = u.data() + (b - b0) * K, *ib = i.data() + (b - b0) * K;
          for (int64_t k = 0; k < K; ++k) {
            ub[k] = bm * ub[k] + obm * ib[k];
            ib[k] = bs * ib[k] + xp[off + k];
            yp[off + k] = ub[k];
          }
        }
      }
    });
  });
  return y;
}

// Adjoint of leaky_filter: dL/dx (time-major) from dL/dU[1..T] (time-major). With λ_U, λ_I
// the adjoints of U[n+1], I[n+1]: u = λ_U + dy[n]; dx[n] = λ_I;
// (λ_U, λ_I) <- (β_m u, (1 - β_m) u + β_s λ_I).
Tensor leaky_filter_backward(const Tensor& dy, double beta_mem, double one_minus_beta_mem,
                             double beta_syn) {
  TORCH_CHECK(is_time_major(dy), "leaky_filter_backward: time-major [B, T, K] expected");
  const int64_t B = dy.size(0), T = dy.size(1), K = dy.size(2);
  Tensor dx = empty_time_major(B, T, K, dy.options());
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "leaky_filter_backward", [&] {
    const scalar_t bm = scalar_t(beta_mem), obm = scalar_t(one_minus_beta_mem);
    const scalar_t bs = scalar_t(beta_syn);
    const scalar_t* gp = dy.data_ptr<scalar_t>();
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    for_blocks(B, n_blocks(B), [&](int64_t, int64_t b0, int64_t b1) {
      std::vector<scalar_t> lu((b1 - b0) * K, scalar_t(0)), li((b1 - b0) * K, scalar_t(0));
      for (int64_t n = T - 1; n >= 0; --n) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t off = (n * B + b) * K;
          scalar_t *lub = lu.data() + (b - b0) * K, *lib = li.data() + (b - b0) * K;
          for (int64_t k = 0; k < K; ++k) {
            const scalar_t u = lub[k] + gp[off + k];
            dxp[off + k] = lib[k];
            lub[k] = bm * u;
            lib[k] = obm * u + bs * lib[k];
          }
        }
      }
    });
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY(TORCH_EXTENSION_NAME, m) {
  m.def("to_sparse(Tensor x, float max_density) -> Tensor[]", &to_sparse);
  m.def("coo_to_sparse(Tensor indices, Tensor values, int B, int T, int C, float max_density) "
        "-> Tensor[]",
        &coo_to_sparse);
  m.def("sparse_mm(Tensor begin, Tensor end, Tensor cols, Tensor vals, Tensor wt) -> Tensor",
        &sparse_mm);
  m.def("sparse_tmm(Tensor begin, Tensor end, Tensor cols, Tensor vals, Tensor g, int C) "
        "-> Tensor", &sparse_tmm);
  m.def("dense_tmm(Tensor x, Tensor g) -> Tensor", &dense_tmm);
  m.def("exp_float_both(Tensor x) -> Tensor[]", &exp_float_both);
  m.def("lif_forward(Tensor x, Tensor in_begin, Tensor in_end, Tensor in_cols, Tensor in_vals, "
        "Tensor wt, Tensor vt, Tensor wot, int B, int T, float beta_mem, "
        "float one_minus_beta_mem, float beta_syn, Tensor bm_v, Tensor obm_v, Tensor bs_v, "
        "bool keep_state, bool keep_pre_reset, bool keep_current, "
        "bool write_spikes, float out_beta_mem, float out_one_minus_beta_mem, "
        "float out_beta_syn, float out_u0, int reduction, bool write_trace) "
        "-> Tensor[]", &lif_forward);
  m.def("lif_backward(Tensor grad, Tensor grad_const, Tensor dy, Tensor grad_logits, "
        "Tensor argmax, int reduction, Tensor wo, Tensor x, "
        "Tensor in_begin, Tensor in_end, Tensor in_cols, Tensor in_vals, Tensor wt, Tensor vt, "
        "Tensor u, Tensor p, Tensor sg, int shape, float slope, float scale, Tensor v, "
        "Tensor(a!) du, Tensor(b!) di, Tensor(c!) lu, Tensor(d!) li, Tensor(e!) dx, int C, "
        "int T, bool reset_grad, bool want_w, bool want_v, bool want_wo, int t0, int t1, "
        "float beta_mem, float one_minus_beta_mem, float beta_syn, float out_beta_mem, "
        "float out_one_minus_beta_mem, float out_beta_syn, Tensor bm_v, Tensor obm_v, "
        "Tensor bs_v, Tensor cur, bool want_decays) -> Tensor[]", &lif_backward);
  m.def("last_active_step(Tensor t) -> int", &last_active_step);
  m.def("leaky_filter(Tensor x, float beta_mem, float one_minus_beta_mem, float beta_syn, "
        "float u0) -> Tensor", &leaky_filter);
  m.def("leaky_filter_backward(Tensor dy, float beta_mem, float one_minus_beta_mem, "
        "float beta_syn) -> Tensor", &leaky_filter_backward);
}
