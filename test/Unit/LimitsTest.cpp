//===- LimitsTest.cpp - parameters and shapes at the documented limits ----===//
//
// Regression tests for answers that were wrong or crashed at the limits:
// products of two parameters past 2^62 (strided shards), sums past the
// single-parameter limit (multi-diagonal offset + width) accepted by the
// compiler but refused by the runtime, and a 9-key window over 2^28 keys
// whose CPU run used to convert every key per thread (std::bad_alloc).
// Random patterns with parameters near the limits run through the C API, the
// generated code and the emulated kernel against the reference semantics.
//
//===----------------------------------------------------------------------===//

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Schedule/Lower.h"
#include "tessera/Schedule/Runs.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/cpu/Half.h"
#include "tessera/tessera.h"

#include "mlir/AsmParser/AsmParser.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>
#include <tuple>

using namespace tessera;

namespace {

constexpr int64_t D = 64;

struct Bundle {
  Bundle() {
    EXPECT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
    std::string dir = std::string(TESSERA_BINARY_DIR) + "/test/bundles/limits";
    status = tessera_bundle_load_file(ctx, dir.c_str(), &bundle);
  }
  ~Bundle() {
    if (bundle)
      tessera_bundle_destroy(bundle);
    tessera_context_destroy(ctx);
  }
  tessera_context *ctx = nullptr;
  tessera_bundle *bundle = nullptr;
  tessera_status status;
};

/// Runs `layer` on random bf16 inputs and checks every row's LSE against a
/// float64 reference masked by `pattern` (the layer's, parsed anew).
void checkLayer(tessera_bundle *b, int64_t layer, int64_t heads,
                const std::string &pattern, int64_t nq, int64_t nk) {
  mlir::MLIRContext ctx;
  ctx.getOrLoadDialect<attn::AttnDialect>();
  auto attr = llvm::cast<attn::PatternAttrInterface>(
      mlir::parseAttribute(pattern, &ctx));
  semantics::Pattern ref = semantics::fromAttr(attr);
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  std::vector<uint16_t> q(nq * heads * D), k(nk * heads * D),
      v(nk * heads * D), o(nq * heads * D);
  for (auto *x : {&q, &k, &v})
    for (uint16_t &e : *x)
      e = cpu::floatToBf16(dist(rng));
  std::vector<float> lse(heads * nq);
  auto t = [&](std::vector<uint16_t> &x, int64_t s) {
    return tessera_tensor{x.data(), TESSERA_DTYPE_BF16, 1, s, heads, D,
                          s * heads * D, heads * D, D};
  };
  tessera_tensor tq = t(q, nq), tk = t(k, nk), tv = t(v, nk), to = t(o, nq);
  ASSERT_EQ(tessera_attention(b, layer, &tq, &tk, &tv, &to, lse.data(), 0,
                              nullptr),
            TESSERA_OK)
      << tessera_last_error();
  double scale = 1.0 / std::sqrt(double(D));
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < nq; ++i) {
      double m = -INFINITY;
      std::vector<double> s;
      for (int64_t j = 0; j < nk; ++j) {
        if (!semantics::allowed(ref, i, j, h, nq, nk, heads))
          continue;
        double dot = 0;
        for (int64_t x = 0; x < D; ++x)
          dot += double(cpu::bf16ToFloat(q[(i * heads + h) * D + x])) *
                 cpu::bf16ToFloat(k[(j * heads + h) * D + x]);
        s.push_back(dot * scale);
        m = std::max(m, s.back());
      }
      double l = 0;
      for (double x : s)
        l += std::exp(x - m);
      double want = s.empty() ? -INFINITY : m + std::log(l);
      double got = lse[h * nq + i];
      if (s.empty()) {
        ASSERT_EQ(got, -INFINITY) << pattern << " head " << h << " row " << i;
        for (int64_t x = 0; x < D; ++x)
          ASSERT_EQ(o[(i * heads + h) * D + x], 0) << pattern;
      } else {
        ASSERT_NEAR(got, want, 1e-3 * (1 + std::abs(want)))
            << pattern << " head " << h << " row " << i;
      }
    }
}

TEST(Limits, ProductsAndSumsPastTheParameterLimit) {
  Bundle b;
  ASSERT_EQ(b.status, TESSERA_OK) << tessera_last_error();
  // Head 0 sees shard 0 (every key below 2^40), head 1 shard 1 (none): the
  // product 2^80 used to wrap to 0 and head 1 saw every key.
  checkLayer(b.bundle, 0, 2,
             "#attn.strided_shards<shards = 1099511627776, block = "
             "1099511627776>",
             70, 90);
  checkLayer(b.bundle, 1, 1,
             "#attn.strided_shards<shards = 3, block = 1099511627776>", 70,
             90);
  checkLayer(b.bundle, 2, 1,
             "#attn.multi_diagonal<offsets = [1099511627776], width = "
             "1099511627776>",
             70, 90);
}

TEST(Limits, LongKeysWithStrideZeroUseBoundedMemory) {
  Bundle b;
  ASSERT_EQ(b.status, TESSERA_OK) << tessera_last_error();
  // One query over 2^28 keys that are all the same row (sequence stride 0):
  // the window sees the last 9, each with the same score, so LSE is that
  // score plus log 9 and O is the value row.
  std::vector<uint16_t> q(D), k(D), v(D), o(D);
  for (int64_t x = 0; x < D; ++x) {
    q[x] = cpu::floatToBf16(0.25f * float(x % 5));
    k[x] = cpu::floatToBf16(0.5f - 0.125f * float(x % 3));
    v[x] = cpu::floatToBf16(float(x) / 8);
  }
  int64_t nk = int64_t(1) << 28;
  tessera_tensor tq{q.data(), TESSERA_DTYPE_BF16, 1, 1, 1, D, D, D, D};
  tessera_tensor tk{k.data(), TESSERA_DTYPE_BF16, 1, nk, 1, D, 0, 0, D};
  tessera_tensor tv{v.data(), TESSERA_DTYPE_BF16, 1, nk, 1, D, 0, 0, D};
  tessera_tensor to{o.data(), TESSERA_DTYPE_BF16, 1, 1, 1, D, D, D, D};
  float lse = 0;
  ASSERT_EQ(tessera_attention(b.bundle, 3, &tq, &tk, &tv, &to, &lse, 0,
                              nullptr),
            TESSERA_OK)
      << tessera_last_error();
  double dot = 0;
  for (int64_t x = 0; x < D; ++x)
    dot += double(cpu::bf16ToFloat(q[x])) * cpu::bf16ToFloat(k[x]);
  EXPECT_NEAR(lse, dot / 8.0 + std::log(9.0), 1e-4);
  for (int64_t x = 0; x < D; ++x)
    EXPECT_EQ(o[x], v[x]) << x;
}

} // namespace

//===----------------------------------------------------------------------===//
// Random parameters near the limits against the reference semantics
//===----------------------------------------------------------------------===//

namespace {

namespace s = tessera::semantics;

constexpr int64_t kL = int64_t(1) << 40;

/// A pattern and how it reads (for failure messages).
struct Case {
  s::Pattern pattern;
  std::string text;
};

/// Random patterns whose parameters sit near the limits: 2^40 and its
/// neighbours, pairs whose products land near 2^62 and 2^80, offsets and
/// phases at the top of their ranges, mixed with small values.
struct NearLimits {
  explicit NearLimits(unsigned seed) : rng(seed) {}

  int64_t pick(std::initializer_list<int64_t> xs) {
    return *(xs.begin() + rng() % xs.size());
  }
  int64_t uniform(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  }
  /// A parameter in [1, 2^40].
  int64_t size() {
    const int64_t m = int64_t(1) << 22;
    switch (rng() % 3) {
    case 0:
      return pick({1, 2, 3, 5, 64, 100, 299});
    case 1:
      // 2^22 x (2^40 - 1) and its neighbours straddle 2^62.
      return pick({kL, kL - 1, kL - 2, kL - 300, kL / 2, kL / 2 + 1, m - 1, m,
                   m + 1, m / 2, m / 4 + 3});
    default:
      return uniform(1, kL);
    }
  }
  /// A value in [0, n): the ends, near the top, or anywhere.
  int64_t below(int64_t n) {
    switch (rng() % 4) {
    case 0:
      return 0;
    case 1:
      return n - 1;
    case 2:
      return std::max<int64_t>(0, n - 2 - int64_t(rng() % 300));
    default:
      return uniform(0, n - 1);
    }
  }
  /// Sorted disjoint half-open ranges in [0, 2^40].
  std::vector<std::pair<int64_t, int64_t>> ranges() {
    std::vector<int64_t> v;
    int n = 2 * (1 + rng() % 2);
    while (int(v.size()) < n) {
      int64_t x = rng() % 2 ? pick({0, 1, 7, 64, 150, 299, kL - 300, kL - 1,
                                    kL, kL - 2})
                            : uniform(0, kL);
      if (std::find(v.begin(), v.end(), x) == v.end())
        v.push_back(x);
    }
    std::sort(v.begin(), v.end());
    std::vector<std::pair<int64_t, int64_t>> r;
    for (size_t i = 0; i < v.size(); i += 2)
      r.push_back({v[i], v[i + 1]});
    return r;
  }
  /// A periodic or listed index set, and its parameters as text.
  s::IndexSet indexSet(std::string &text) {
    s::IndexSet set;
    if (rng() % 2) {
      set.period = size();
      set.width = 1 + below(set.period);
      set.phase = below(set.period);
      text = "period = " + std::to_string(set.period) +
             ", width = " + std::to_string(set.width) +
             ", phase = " + std::to_string(set.phase);
      return set;
    }
    set.ranges = ranges();
    text = "ranges = [";
    for (auto [lo, hi] : set.ranges)
      text += (text.back() == '[' ? "" : ", ") + std::to_string(lo) + ", " +
              std::to_string(hi);
    text += "]";
    return set;
  }

  Case leaf() {
    auto str = [](int64_t v) { return std::to_string(v); };
    switch (rng() % 11) {
    case 0:
    case 1: {
      int64_t n = size(), b = size(), o = below(n);
      return {s::Pattern{s::StridedShards{n, b, o}},
              "strided_shards<shards = " + str(n) + ", block = " + str(b) +
                  ", offset = " + str(o) + ">"};
    }
    case 2: {
      int64_t before = rng() % 3 ? size() : 0, after = rng() % 3 ? size() : 0;
      return {s::Pattern{s::Window{before, after}},
              "window<before = " + str(before) + ", after = " + str(after) +
                  ">"};
    }
    case 3: {
      int64_t n = size();
      return {s::Pattern{s::Sink{n}}, "sink<count = " + str(n) + ">"};
    }
    case 4: {
      s::MultiDiagonal m;
      m.width = rng() % 2 ? pick({0, 1, 7}) : size();
      if (rng() % 2) {
        m.stride = size();
        return {s::Pattern{m}, "multi_diagonal<stride = " + str(m.stride) +
                                   ", width = " + str(m.width) + ">"};
      }
      for (int i = 0; i < 3; ++i) {
        int64_t o = rng() % 2 ? size() : pick({0, 1, 5, 200});
        m.offsets.push_back(rng() % 2 ? o : -o);
      }
      std::sort(m.offsets.begin(), m.offsets.end());
      m.offsets.erase(std::unique(m.offsets.begin(), m.offsets.end()),
                      m.offsets.end());
      std::string t = "multi_diagonal<offsets = [";
      for (int64_t o : m.offsets)
        t += (t.back() == '[' ? "" : ", ") + str(o);
      return {s::Pattern{m}, t + "], width = " + str(m.width) + ">"};
    }
    case 5: {
      std::string t;
      s::IndexSet set = indexSet(t);
      return {s::Pattern{s::VerticalStripe{set}}, "vertical_stripe<" + t + ">"};
    }
    case 6: {
      std::string t;
      s::IndexSet set = indexSet(t);
      return {s::Pattern{s::HorizontalStripe{set}},
              "horizontal_stripe<" + t + ">"};
    }
    case 7: {
      s::Grid g;
      g.stride = size();
      g.verticalWidth = rng() % 3 ? 1 + below(g.stride) : 0;
      g.slashWidth = g.verticalWidth == 0 || rng() % 2 ? 1 + below(g.stride)
                                                       : 0;
      g.phase = below(g.stride);
      return {s::Pattern{g}, "grid<stride = " + str(g.stride) +
                                 ", vertical_width = " + str(g.verticalWidth) +
                                 ", slash_width = " + str(g.slashWidth) +
                                 ", phase = " + str(g.phase) + ">"};
    }
    case 8: {
      int64_t g = size(), shift = below(g);
      return {s::Pattern{s::ShiftedGroups{g, shift}},
              "shifted_groups<size = " + str(g) + ", shift = " + str(shift) +
                  ">"};
    }
    case 9: {
      s::BlockSparse b;
      b.blockQ = size();
      b.blockK = size();
      for (int i = 0; i < 3; ++i)
        b.blocks.push_back(
            {pick({0, 1, 2, 5, kL - 1, kL}), pick({0, 1, 2, 5, kL - 1, kL})});
      std::sort(b.blocks.begin(), b.blocks.end());
      b.blocks.erase(std::unique(b.blocks.begin(), b.blocks.end()),
                     b.blocks.end());
      std::string t = "block_sparse<block_q = " + str(b.blockQ) +
                      ", block_k = " + str(b.blockK) + ", blocks = [";
      for (auto [q, k] : b.blocks)
        t += (t.back() == '[' ? "" : ", ") + str(q) + ", " + str(k);
      return {s::Pattern{b}, t + "]>"};
    }
    default:
      return rng() % 2 ? Case{s::Pattern{s::Causal{}}, "causal"}
                       : Case{s::Pattern{s::Dense{}}, "dense"};
    }
  }

  /// A leaf, or a union, intersection or difference of two patterns.
  Case pattern(int depth) {
    if (depth == 0 || rng() % 3 == 0)
      return leaf();
    Case a = pattern(depth - 1), b = pattern(depth - 1);
    std::vector<s::Pattern> parts = {a.pattern, b.pattern};
    std::string args = "<" + a.text + ", " + b.text + ">";
    switch (rng() % 3) {
    case 0:
      return {s::Pattern{s::Union{parts}}, "union" + args};
    case 1:
      return {s::Pattern{s::Intersect{parts}}, "intersect" + args};
    default:
      return {s::Pattern{s::Difference{parts}}, "difference" + args};
    }
  }

  std::mt19937_64 rng;
};

std::string slurpFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A bundle whose only layer runs `pattern` on `heads` query heads (one kv
/// head, bf16, head_dim 64): the limits bundle's manifest with its first
/// layer's program replaced by the lowered pattern, and its CUDA source. The
/// runtime's CPU path evaluates the manifest's program, so this runs what
/// the compiler lowers, through the C API.
struct PatternBundle {
  PatternBundle(const s::Pattern &pattern, int64_t heads) {
    namespace json = llvm::json;
    static const std::string dir =
        std::string(TESSERA_BINARY_DIR) + "/test/bundles/limits";
    static const std::string text = slurpFile(dir + "/manifest.json");
    static const std::string source = slurpFile(dir + "/bundle.cu");
    schedule::HeadGroup g{pattern, {}};
    for (int64_t h = 0; h < heads; ++h)
      g.heads.push_back(h);
    schedule::LayerSchedule sched;
    std::string error;
    if (!schedule::buildLayerSchedule({g}, heads, sched, error)) {
      problem = "lowering: " + error;
      return;
    }
    llvm::Expected<json::Value> v = json::parse(text);
    if (!v) {
      problem = "limits manifest: " + llvm::toString(v.takeError());
      return;
    }
    json::Object &root = *v->getAsObject();
    json::Object layer = *(*root.getArray("layers"))[0].getAsObject();
    auto array = [](const std::vector<kernel::i64> &xs) {
      json::Array a;
      for (kernel::i64 x : xs)
        a.push_back(x);
      return a;
    };
    json::Array nodes;
    for (const kernel::Node &n : sched.nodes)
      nodes.push_back(json::Array{n.kind, n.axis, n.a, n.b, n.c, n.dataBegin,
                                  n.dataSize});
    layer["num_heads"] = heads;
    layer["num_kv_heads"] = 1;
    layer["computed_heads"] = array(sched.computedHead);
    layer["head_groups"] = array(sched.headGroup);
    // One launch over every computed head (the CPU path launches none).
    std::string kernel =
        (*layer.getArray("kernels"))[0].getAsObject()->getString("name")->str();
    layer["kernels"] = json::Array{json::Object{
        {"name", kernel}, {"slots", int64_t(sched.computedHead.size())}}};
    layer["skipped_heads"] = array(sched.skippedHeads);
    layer["program"] = json::Object{{"nodes", std::move(nodes)},
                                    {"data", array(sched.data)},
                                    {"group_begin", array(sched.groupBegin)}};
    root["layers"] = json::Array{json::Value(std::move(layer))};
    std::string man;
    llvm::raw_string_ostream os(man);
    os << json::Value(std::move(root));
    os.flush();
    EXPECT_EQ(tessera_context_create(TESSERA_DEVICE_CPU, 0, &ctx), TESSERA_OK);
    if (tessera_bundle_load_memory(ctx, man.data(), man.size(), source.data(),
                                   source.size(), &bundle) != TESSERA_OK)
      problem = std::string("loading: ") + tessera_last_error();
  }
  ~PatternBundle() {
    if (bundle)
      tessera_bundle_destroy(bundle);
    if (ctx)
      tessera_context_destroy(ctx);
  }
  tessera_context *ctx = nullptr;
  tessera_bundle *bundle = nullptr;
  std::string problem;
};

/// What a row attends, as Q = 0 reveals it: every allowed key scores 0, so
/// LSE = log(allowed keys) and O = the mean of their value rows.
struct Attended {
  float lse;
  std::vector<float> o;
};

/// Runs layer 0 of `b` with Q = 0 (f32) on `nq` rows of `heads` heads over
/// `nk` keys of one kv head. `oneHot`: value row k is the unit vector
/// e(k mod D), so O holds the share of each residue among the attended
/// keys; otherwise K and V are one row repeated (sequence stride 0: any Nk
/// up to 2^40 in D floats), V = (1, 2, ..., D) / 8.
std::string runZeroQ(tessera_bundle *b, int64_t heads, int64_t nq,
                     int64_t nk, bool oneHot, std::vector<Attended> &out) {
  std::vector<float> q(D, 0.0f), o(size_t(nq * heads * D), 7.0f),
      lse(size_t(heads * nq), 7.0f);
  std::vector<float> k(oneHot ? size_t(nk * D) : size_t(D), 0.25f), v;
  if (oneHot) {
    v.assign(size_t(nk * D), 0.0f);
    for (int64_t j = 0; j < nk; ++j)
      v[size_t(j * D + j % D)] = 1.0f;
  } else {
    for (int64_t x = 0; x < D; ++x)
      v.push_back(float(x + 1) / 8);
  }
  int64_t ks = oneHot ? D : 0;
  tessera_tensor tq{q.data(), TESSERA_DTYPE_F32, 1, nq, heads, D, 0, 0, 0};
  tessera_tensor tk{k.data(), TESSERA_DTYPE_F32, 1, nk, 1, D, 0, ks, 0};
  tessera_tensor tv{v.data(), TESSERA_DTYPE_F32, 1, nk, 1, D, 0, ks, 0};
  tessera_tensor to{o.data(),     TESSERA_DTYPE_F32, 1, nq, heads, D,
                    nq * heads * D, heads * D,        D};
  if (tessera_attention(b, 0, &tq, &tk, &tv, &to, lse.data(), 0, nullptr) !=
      TESSERA_OK)
    return tessera_last_error();
  out.assign(size_t(heads * nq), Attended{});
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < nq; ++i) {
      Attended &a = out[size_t(h * nq + i)];
      a.lse = lse[size_t(h * nq + i)];
      a.o.assign(o.begin() + (i * heads + h) * D,
                 o.begin() + (i * heads + h + 1) * D);
    }
  return "";
}

/// Compares what a row attended with the allowed keys (`count` of them;
/// `perResidue[x]`: those with k mod D == x, or empty for repeated value
/// rows), outputs within `tolerance` (relative to 1 + the value).
std::string compareRow(const Attended &got, int64_t count,
                       const std::vector<int64_t> &perResidue,
                       double tolerance = 1e-5) {
  if (count == 0) {
    if (got.lse != -INFINITY)
      return "LSE " + std::to_string(got.lse) + " where no key is allowed";
    for (float x : got.o)
      if (x != 0.0f)
        return "a nonzero output where no key is allowed";
    return "";
  }
  if (!(std::abs(got.lse - std::log(double(count))) <
        std::max(1e-4, tolerance)))
    return "LSE " + std::to_string(got.lse) + ", want log(" +
           std::to_string(count) + ")";
  for (int64_t x = 0; x < D; ++x) {
    double want = perResidue.empty() ? double(x + 1) / 8
                                     : double(perResidue[x]) / double(count);
    if (!(std::abs(got.o[x] - want) <= tolerance * (1 + want)))
      return "output " + std::to_string(x) + " is " +
             std::to_string(got.o[x]) + ", want " + std::to_string(want) +
             " (" + std::to_string(count) + " keys)";
  }
  return "";
}

/// Short sequences (both lengths up to 160, Nq != Nk mostly): every allowed
/// key of every row, through one-hot value rows.
std::string checkShort(const Case &c, int64_t heads, int64_t nq, int64_t nk) {
  PatternBundle b(c.pattern, heads);
  if (!b.problem.empty())
    return b.problem;
  std::vector<Attended> got;
  if (std::string e = runZeroQ(b.bundle, heads, nq, nk, true, got); !e.empty())
    return e;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < nq; ++i) {
      std::vector<int64_t> residues(D, 0);
      int64_t count = 0;
      for (int64_t j = 0; j < nk; ++j)
        if (s::allowed(c.pattern, i, j, h, nq, nk, heads)) {
          ++residues[size_t(j % D)];
          ++count;
        }
      if (std::string e = compareRow(got[size_t(h * nq + i)], count, residues);
          !e.empty())
        return "head " + std::to_string(h) + " row " + std::to_string(i) +
               ": " + e;
    }
  return "";
}

std::string where(const Case &c, int64_t heads, int64_t nq, int64_t nk) {
  return c.text + " with " + std::to_string(heads) + " heads at Nq = " +
         std::to_string(nq) + ", Nk = " + std::to_string(nk);
}

/// The reported case: 2^40 shards of 2^40 keys, offset 2^40 - 1. Head 0's
/// shard is 2^40 - 1, whose keys start at (2^40 - 1) * 2^40: it sees
/// nothing; head 1's shard is 0 (every key). The saturated product used to
/// be taken for the phase, which wraps to 0 modulo the saturated period.
/// Also at the edge of saturation (a shard's first key just under 2^62, the
/// period just over it) and under a difference with a window.
TEST(Limits, ShardsWhoseFirstKeyIsPastEverySequence) {
  const int64_t m = int64_t(1) << 22;
  std::vector<Case> cases;
  for (auto [n, b, o] : {std::tuple{kL, kL, kL - 1}, {m + 1, kL - 1, m},
                         {m, kL, m - 1}, {kL, kL - 1, kL - 1}}) {
    std::string t = "strided_shards<shards = " + std::to_string(n) +
                    ", block = " + std::to_string(b) +
                    ", offset = " + std::to_string(o) + ">";
    s::Pattern p{s::StridedShards{n, b, o}};
    cases.push_back({p, t});
    cases.push_back({s::Pattern{s::Difference{{p, s::Pattern{s::Window{3, 0}}}}},
                     "difference<" + t + ", window<before = 3>>"});
  }
  for (const Case &c : cases) {
    // By the reference, head 0 sees no key and head 1 nearly every one.
    EXPECT_EQ(s::countAllowed(c.pattern, 0, 70, 90, 2), 0) << c.text;
    EXPECT_GE(s::countAllowed(c.pattern, 1, 70, 90, 2), 70 * 90 - 70 * 4)
        << c.text;
    EXPECT_EQ(checkShort(c, 2, 70, 90), "") << where(c, 2, 70, 90);
  }
}

TEST(Limits, RandomParametersNearTheLimitOnShortSequences) {
  NearLimits gen(22);
  for (int i = 0; i < 250; ++i) {
    Case c = gen.pattern(2);
    int64_t heads = 1 + int64_t(gen.rng() % 4);
    int64_t nq = gen.uniform(1, 160), nk = gen.uniform(1, 160);
    ASSERT_EQ(checkShort(c, heads, nq, nk), "") << where(c, heads, nq, nk);
  }
}

/// Keys up to 2^40 (K and V one row with sequence stride 0), a few query
/// rows: the pattern within a window of at most 300 keys, so that each row
/// sees few keys and the reference counts them one by one.
TEST(Limits, RandomParametersNearTheLimitOnLongSequences) {
  NearLimits gen(40);
  // Each call sets up the executor's key-block cache per worker (64 MiB at
  // these lengths): 80 cases keep the test within seconds.
  for (int i = 0; i < 80; ++i) {
    Case inner = gen.pattern(2);
    int64_t before = gen.uniform(0, 300), after = gen.uniform(0, 3);
    Case c{s::Pattern{s::Intersect{
               {s::Pattern{s::Window{before, after}}, inner.pattern}}},
           "intersect<window<before = " + std::to_string(before) +
               ", after = " + std::to_string(after) + ">, " + inner.text +
               ">"};
    int64_t heads = 1 + int64_t(gen.rng() % 3);
    int64_t nk = gen.pick({kL, kL - 1, kL - 300, gen.uniform(kL / 2, kL),
                           gen.uniform(1, kL)});
    int64_t nq = std::min(nk, gen.pick({1, 2, 3, 65, 70}));
    PatternBundle b(c.pattern, heads);
    ASSERT_EQ(b.problem, "") << where(c, heads, nq, nk);
    std::vector<Attended> got;
    ASSERT_EQ(runZeroQ(b.bundle, heads, nq, nk, false, got), "")
        << where(c, heads, nq, nk);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t r = 0; r < nq; ++r) {
        int64_t p = r + nk - nq, count = 0;
        for (int64_t j = std::max<int64_t>(0, p - before);
             j <= std::min(nk - 1, p + after); ++j)
          count += s::allowed(c.pattern, r, j, h, nq, nk, heads);
        ASSERT_EQ(compareRow(got[size_t(h * nq + r)], count, {}), "")
            << where(c, heads, nq, nk) << ", head " << h << " row " << r;
      }
  }
}

} // namespace

//===----------------------------------------------------------------------===//
// Strided shards near the limits in the generated code and the emulated
// kernel
//===----------------------------------------------------------------------===//

// The kernel body compiled for the host (after every other header: the
// emulator defines the CUDA keywords and built-ins as macros). Its
// `#pragma unroll` lines need -Wno-unknown-pragmas, which GCC 12 takes only
// from the command line: the build defines TESSERA_LIMITS_EMULATOR with it.
#ifdef TESSERA_LIMITS_EMULATOR
#include "tessera/kernel/Emulate.h"
#include "tessera/kernel/FlashForward.cuh"

namespace {

namespace kn = tessera::kernel;

/// The parameters of the shards group below, set before each launch.
kn::i64 emuBlock = 1, emuShards = 1, emuOffset = 0;

/// The code the emitter generates for a strided_shards group (the test
/// checks emitGroupCode's text against it), its literals read from
/// emuBlock, emuShards and emuOffset.
struct EmuShards {
  static TESSERA_HD bool allowed(kn::i64 p, kn::i64 k, kn::i64 head,
                                 kn::i64 numHeads) {
    (void)p;
    (void)numHeads;
    return (kn::floorMod(k / emuBlock, emuShards) ==
            kn::floorMod(head + emuOffset, emuShards));
  }
  static TESSERA_HD kn::Run runFrom(const kn::RunCtx &ctx, kn::i64 kb) {
    auto r0 = [&](kn::i64 x) -> kn::Run {
      return kn::shardsRun(ctx, x, emuBlock, emuShards, emuOffset);
    };
    return r0(kb);
  }
};

/// The bundle's group dispatch, for the one group.
struct EmuGroups {
  static kn::Run runFrom(kn::i64, const kn::RunCtx &ctx, kn::i64 kb) {
    return EmuShards::runFrom(ctx, kb);
  }
  static kn::u32 keep(kn::i64, kn::i64 rowPos, kn::i64 k0, int c2,
                      kn::i64 nk, kn::i64 head, kn::i64 numHeads) {
    return kn::keepBits<EmuShards>(rowPos, k0, c2, nk, head, numHeads);
  }
};

void emuShardsKernel(const kn::LayerTable &t, const kn::AttnParams &p) {
  // Four warps (64-row blocks): the emitted bundles use eight at d64.
  __shared__ __align__(128) kn::PipeTiles<64> smem;
  kn::pipeForward<kn::kBF16, 64, 4, false, EmuGroups>(t, p, smem, blockIdx.y, 0);
}

TEST(Limits, ShardsNearTheLimitInTheGeneratedCodeAndTheEmulatedKernel) {
  NearLimits gen(80);
  const int64_t m = int64_t(1) << 22;
  for (int i = 0; i < 24; ++i) {
    int64_t n = gen.size(), b = gen.size(), off = gen.below(n);
    if (i < 3) // the reported case and the edges of saturation
      std::tie(n, b, off) = std::vector<std::tuple<int64_t, int64_t, int64_t>>{
          {kL, kL, kL - 1}, {m + 1, kL - 1, m}, {m, kL, m - 1}}[size_t(i)];
    s::Pattern pat{s::StridedShards{n, b, off}};
    std::string text = "strided_shards<shards = " + std::to_string(n) +
                       ", block = " + std::to_string(b) +
                       ", offset = " + std::to_string(off) + ">";
    auto lit = [](int64_t v) { return std::to_string(v) + "LL"; };
    std::string code =
        schedule::emitGroupCode(pat, schedule::buildRuns(pat), "P");
    ASSERT_NE(code.find("return (floorMod(k / " + lit(b) + ", " + lit(n) +
                        ") == floorMod(head + " + lit(off) + ", " + lit(n) +
                        "));"),
              std::string::npos)
        << code;
    ASSERT_NE(code.find("return shardsRun(ctx, x, " + lit(b) + ", " + lit(n) +
                        ", " + lit(off) + "); };"),
              std::string::npos)
        << code;
    emuBlock = b;
    emuShards = n;
    emuOffset = off;

    // Q = 0 and value row k = e(k mod D), in bf16; one kv head.
    int64_t heads = 2 + int64_t(gen.rng() % 2);
    int64_t nq = gen.uniform(1, 130), nk = gen.uniform(1, 130);
    std::vector<uint16_t> q(size_t(nq * heads * D), 0),
        k(size_t(nk * D), cpu::floatToBf16(0.25f)), v(size_t(nk * D), 0),
        o(size_t(nq * heads * D), cpu::floatToBf16(7.0f));
    for (int64_t j = 0; j < nk; ++j)
      v[size_t(j * D + j % D)] = cpu::floatToBf16(1.0f);
    std::vector<float> lse(size_t(heads * nq), 7.0f);
    std::vector<kn::i64> computed, group(size_t(heads), 0), skipped = {0};
    for (int64_t h = 0; h < heads; ++h)
      computed.push_back(h);
    kn::LayerTable table = {nullptr,         nullptr, nullptr,
                            computed.data(), group.data(), heads,
                            heads,           skipped.data(), 0};
    kn::AttnParams p{};
    p.q = q.data();
    p.k = k.data();
    p.v = v.data();
    p.o = o.data();
    p.lse = lse.data();
    p.nq = nq;
    p.nk = nk;
    p.qStrideB = p.oStrideB = nq * heads * D;
    p.qStrideS = p.oStrideS = heads * D;
    p.qStrideH = p.oStrideH = D;
    p.kStrideB = p.vStrideB = nk * D;
    p.kStrideS = p.vStrideS = D;
    p.kStrideH = p.vStrideH = 0;
    p.scaleLog2 = float(1.4426950408889634 / 8);
    p.numHeads = int(heads);
    p.numKvHeads = 1;
    p.vectorLoads = 0;
    tessera_emu::launch([&] { emuShardsKernel(table, p); },
                        dim3{unsigned((nq + 63) / 64), unsigned(heads), 1},
                        dim3{128, 1, 1});

    for (int64_t h = 0; h < heads; ++h)
      for (int64_t r = 0; r < nq; ++r) {
        std::vector<int64_t> residues(D, 0);
        int64_t count = 0;
        for (int64_t j = 0; j < nk; ++j)
          if (s::allowed(pat, r, j, h, nq, nk, heads)) {
            ++residues[size_t(j % D)];
            ++count;
          }
        Attended got{lse[size_t(h * nq + r)], {}};
        for (int64_t x = 0; x < D; ++x)
          got.o.push_back(
              cpu::bf16ToFloat(o[size_t((r * heads + h) * D + x)]));
        // bf16 outputs: within 2^-9 relative; neighbouring shares of at
        // most 3 keys a residue differ by a third.
        ASSERT_EQ(compareRow(got, count, residues, 3e-3), "")
            << text << " with " << heads << " heads at Nq = " << nq
            << ", Nk = " << nk << ": head " << h << " row " << r;
      }
  }
}

} // namespace
#endif // TESSERA_LIMITS_EMULATOR
