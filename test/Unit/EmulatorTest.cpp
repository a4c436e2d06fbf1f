//===- EmulatorTest.cpp - the emitted CUDA kernels, run on the host -------===//
//
// Every kernel of the shipped bundles and of Inputs/emulation.mlir, compiled
// for the host with tessera/kernel/Emulate.h, runs under the thread-block
// emulator and is compared with a dense float64 attention masked by the
// reference semantics (the patterns of the manifest, parsed anew), within
// the CPU executor's tolerances (output: fp16 2e-3, bf16 1.6e-2 of the
// largest reference value; LSE 1e-3 absolute plus relative). Lengths are not
// tile multiples, Nq != Nk, tensors are strided (padded heads and rows), both
// load paths run (16-byte vector loads and element loads), skipped heads and
// empty rows give O = 0 and LSE = -inf; non-finite inputs reach only the
// rows that see them. Four deliberately broken copies of a bundle must fail
// the same comparison.
//
// How a new kernel gets an emulated test: emit it into a bundle whose kernels
// are registered (the emitter writes TESSERA_EMU_KERNEL(name) under
// TESSERA_EMULATE), add the bundle to the list in test/Unit/CMakeLists.txt,
// and launch it here with tessera_emu::launch (grid, 128 threads) through
// tessera_emu::registry()["bundle/kernel"].
//
//===----------------------------------------------------------------------===//

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/cpu/Half.h"

#include "mlir/AsmParser/AsmParser.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "tessera/kernel/Emulate.h"
#include "tessera/kernel/Program.h"

using namespace tessera;
namespace json = llvm::json;

namespace {

struct Shape {
  int64_t batch, nq, nk;
  bool vectorLoads; ///< 16-byte aligned rows (else odd padding)
};

struct Result {
  double outErr = 0, lseErr = 0;
  std::string where;
  int64_t nonFiniteRows = 0; ///< rows that saw a poisoned input (checked)
};

/// Non-finite inputs planted in every batch and head (-1: none): value
/// element 0 of key vKey infinite, key kKey NaN, query row qRow NaN. A row
/// that sees one must come out non-finite where the float64 reference is
/// (all NaN with LSE NaN for a NaN score), every other row as without it.
struct Poison {
  int64_t vKey = -1, kKey = -1, qRow = -1;
};

/// What the Hopper kernels' emulator registrations take (HopperForward.cuh's
/// HopperLaunch, laid out alike): the call's parameters and the tensor maps
/// of q, k and v.
struct HopperLaunch {
  kernel::AttnParams p;
  tessera_emu::TensorMap q, k, v;
};

/// A tensor map of a [batch, seq, heads, d] tensor with element strides
/// `strides` (batch, seq, head) for the Hopper kernel: boxes of 64 elements
/// of d, one head, `rows` rows and one batch entry, 128-byte swizzle, zeros
/// past the ends.
tessera_emu::TensorMap hopperMap(uint16_t *data, bool f16, int64_t batch,
                                 int64_t seq, int64_t heads, int64_t d,
                                 const std::array<int64_t, 3> &strides,
                                 uint32_t rows) {
  tessera_emu::TensorMap m;
  const uint64_t dims[4] = {uint64_t(d), uint64_t(heads), uint64_t(seq),
                            uint64_t(batch)};
  const uint64_t bytes[3] = {uint64_t(strides[2]) * 2,
                             uint64_t(strides[1]) * 2,
                             uint64_t(strides[0]) * 2};
  const uint32_t box[4] = {64, 1, rows, 1};
  EXPECT_EQ(tessera_emu::encodeTensorMapTiled(
                &m, f16 ? tessera_emu::kTensorMapF16 : tessera_emu::kTensorMapBF16,
                4, data, dims, bytes, box, 3, true),
            tessera_emu::kEncodeOk);
  return m;
}

/// Runs every layer of a bundle on `shape` under the emulator; returns the
/// worst output and LSE errors (relative to the tolerance of each layer's
/// dtype: 1 is the limit). `hopper`: the layers of head_dim 64 and 128
/// through the bundle's Hopper kernels (the layer's "wgmma" kernels: 128 x
/// 64 tiles, 384 threads, tensor maps; 16-byte aligned rows), the others
/// not run.
Result runBundle(const std::string &name, const Shape &shape,
                 mlir::MLIRContext &ctx, const Poison &poison = {},
                 bool hopper = false) {
  std::string dir = std::string(TESSERA_BINARY_DIR) + "/test/bundles/" + name;
  auto buf = llvm::MemoryBuffer::getFile(dir + "/manifest.json");
  EXPECT_TRUE(bool(buf)) << dir;
  llvm::Expected<json::Value> manifest = json::parse((*buf)->getBuffer());
  EXPECT_TRUE(bool(manifest));
  Result worst;
  std::mt19937_64 rng(7);
  std::normal_distribution<float> dist(0, 1);
  for (const json::Value &lv : *manifest->getAsObject()->getArray("layers")) {
    const json::Object &layer = *lv.getAsObject();
    int64_t hq = *layer.getInteger("num_heads");
    int64_t hkv = *layer.getInteger("num_kv_heads");
    int64_t d = *layer.getInteger("head_dim");
    int64_t position = *layer.getInteger("position");
    bool f16 = *layer.getString("dtype") == "f16";
    if (hopper && d != 64 && d != 128)
      continue;
    // The layer's attention kernels (several where its patterns are split)
    // and their slot counts.
    std::vector<std::pair<std::string, int64_t>> kernels;
    for (const json::Value &k : *layer.getArray("kernels"))
      kernels.push_back({k.getAsObject()->getString("name")->str(),
                         *k.getAsObject()->getInteger("slots")});
    // Their sm_90a twins, in the same order.
    if (hopper) {
      const json::Object *w = layer.getObject("wgmma");
      EXPECT_TRUE(w && w->getArray("kernels") &&
                  w->getArray("kernels")->size() == kernels.size())
          << "layer " << position << " has no sm_90a kernels";
      if (!w || !w->getArray("kernels") ||
          w->getArray("kernels")->size() != kernels.size())
        return worst;
      for (size_t i = 0; i < kernels.size(); ++i)
        kernels[i].first = (*w->getArray("kernels"))[i].getAsString()->str();
      EXPECT_EQ(w->getInteger("block_q"), 128);
      EXPECT_EQ(w->getInteger("threads"), 384);
    }
    // The reference pattern of every head; skipped heads have none.
    std::vector<std::optional<semantics::Pattern>> ref(hq);
    for (const json::Value &g : *layer.getArray("groups")) {
      auto attr = llvm::dyn_cast_or_null<attn::PatternAttrInterface>(
          mlir::parseAttribute(*g.getAsObject()->getString("pattern"), &ctx));
      EXPECT_TRUE(bool(attr));
      for (const json::Value &h : *g.getAsObject()->getArray("heads"))
        ref[*h.getAsInteger()] = semantics::fromAttr(attr);
    }
    std::vector<int64_t> skipped;
    for (const json::Value &h : *layer.getArray("skipped_heads"))
      skipped.push_back(*h.getAsInteger());
    int64_t computed = hq - int64_t(skipped.size());

    // [batch, seq, heads, d] with padding: 16-byte multiples when vector
    // loads are on, else 2 extra elements (4-byte aligned rows).
    int64_t pad = shape.vectorLoads ? 8 : 2;
    auto strides = [&](int64_t seq, int64_t heads) {
      int64_t sh = d + pad, ss = heads * sh + pad;
      return std::array<int64_t, 3>{seq * ss + pad, ss, sh};
    };
    auto sq = strides(shape.nq, hq), sk = strides(shape.nk, hkv);
    size_t qn = shape.batch * sq[0], kn = shape.batch * sk[0];
    auto round = [&](float x) {
      return f16 ? cpu::floatToF16(x) : cpu::floatToBf16(x);
    };
    auto value = [&](uint16_t x) {
      return double(f16 ? cpu::f16ToFloat(x) : cpu::bf16ToFloat(x));
    };
    std::vector<uint16_t> q(qn), k(kn), v(kn), o(qn, round(7.0f));
    for (auto *t : {&q, &k, &v})
      for (uint16_t &x : *t)
        x = round(dist(rng));
    std::vector<float> lse(shape.batch * hq * shape.nq, 7.0f);
    for (int64_t b = 0; b < shape.batch; ++b) {
      for (int64_t h = 0; h < hkv; ++h) {
        if (poison.vKey >= 0)
          v[b * sk[0] + poison.vKey * sk[1] + h * sk[2]] =
              round(std::numeric_limits<float>::infinity());
        for (int64_t x = 0; poison.kKey >= 0 && x < d; ++x)
          k[b * sk[0] + poison.kKey * sk[1] + h * sk[2] + x] = round(NAN);
      }
      for (int64_t h = 0; h < hq; ++h)
        for (int64_t x = 0; poison.qRow >= 0 && x < d; ++x)
          q[b * sq[0] + poison.qRow * sq[1] + h * sq[2] + x] = round(NAN);
    }

    kernel::AttnParams p{};
    p.q = q.data();
    p.k = k.data();
    p.v = v.data();
    p.o = o.data();
    p.lse = lse.data();
    p.nq = shape.nq;
    p.nk = shape.nk;
    p.qStrideB = p.oStrideB = sq[0];
    p.qStrideS = p.oStrideS = sq[1];
    p.qStrideH = p.oStrideH = sq[2];
    p.kStrideB = p.vStrideB = sk[0];
    p.kStrideS = p.vStrideS = sk[1];
    p.kStrideH = p.vStrideH = sk[2];
    double scale = 1.0 / std::sqrt(double(d));
    p.scaleLog2 = float(scale * 1.4426950408889634);
    p.numHeads = int(hq);
    p.numKvHeads = int(hkv);
    p.vectorLoads = shape.vectorLoads ? 1 : 0;

    auto &reg = tessera_emu::registry();
    // The kernel's query rows and threads per block, as the runtime reads
    // them from the manifest (the Hopper kernels': 128 and 384).
    int64_t rows = hopper ? 128 : *layer.getInteger("kernel_block_q");
    int64_t threads = hopper ? 384 : *layer.getInteger("kernel_threads");
    HopperLaunch hl{p, {}, {}, {}};
    if (hopper) {
      hl.q = hopperMap(q.data(), f16, shape.batch, shape.nq, hq, d, sq, 128);
      hl.k = hopperMap(k.data(), f16, shape.batch, shape.nk, hkv, d, sk, 64);
      hl.v = hopperMap(v.data(), f16, shape.batch, shape.nk, hkv, d, sk, 64);
    }
    const void *params = hopper ? static_cast<const void *>(&hl) : &p;
    int64_t slots = 0;
    for (const auto &[kernel, count] : kernels) {
      const std::string full = name + "/" + kernel;
      auto fn = reg.find(full);
      EXPECT_NE(fn, reg.end()) << full;
      if (fn == reg.end())
        return worst;
      tessera_emu::launch([&] { fn->second(params, int(position)); },
                          dim3{unsigned((shape.nq + rows - 1) / rows),
                               unsigned(count), unsigned(shape.batch)},
                          dim3{unsigned(threads), 1, 1});
      slots += count;
    }
    EXPECT_EQ(slots, computed) << name;
    if (!skipped.empty()) {
      auto fill = reg.find(name + "/" + layer.getString("fill_kernel")->str());
      EXPECT_NE(fill, reg.end());
      if (fill != reg.end())
        tessera_emu::launch([&] { fill->second(&p, int(position)); },
                            dim3{unsigned((shape.nq + 127) / 128),
                                 unsigned(skipped.size()),
                                 unsigned(shape.batch)},
                            dim3{128, 1, 1});
    }

    // float64 reference.
    double tol = f16 ? 2e-3 : 1.6e-2;
    const double inf = std::numeric_limits<double>::infinity();
    int64_t group = hq / hkv;
    std::vector<double> s(shape.nk), out(d);
    bool sawNan = false;
    for (int64_t b = 0; b < shape.batch; ++b) {
      double maxRef = 0, maxErr = 0, lseErr = 0;
      std::string where;
      for (int64_t h = 0; h < hq; ++h)
        for (int64_t i = 0; i < shape.nq; ++i) {
          const uint16_t *qi = &q[b * sq[0] + i * sq[1] + h * sq[2]];
          double m = -inf;
          for (int64_t j = 0; j < shape.nk; ++j) {
            s[j] = -inf;
            if (!ref[h] || !semantics::allowed(*ref[h], i, j, h, shape.nq,
                                               shape.nk, hq))
              continue;
            const uint16_t *kj =
                &k[b * sk[0] + j * sk[1] + (h / group) * sk[2]];
            double dot = 0;
            for (int64_t x = 0; x < d; ++x)
              dot += value(qi[x]) * value(kj[x]);
            s[j] = dot * scale;
            m = std::max(m, s[j]);
            sawNan |= std::isnan(s[j]);
          }
          const uint16_t *oi = &o[b * sq[0] + i * sq[1] + h * sq[2]];
          if (sawNan) { // a NaN score this row sees: NaN output and LSE
            sawNan = false;
            ++worst.nonFiniteRows;
            bool allNan = std::isnan(lse[(b * hq + h) * shape.nq + i]);
            for (int64_t x = 0; x < d; ++x)
              allNan &= std::isnan(value(oi[x]));
            if (!allNan)
              worst.lseErr = inf, worst.where = "a NaN row is not NaN";
            continue;
          }
          double l = 0;
          std::fill(out.begin(), out.end(), 0.0);
          if (m > -inf)
            for (int64_t j = 0; j < shape.nk; ++j) {
              if (s[j] == -inf)
                continue;
              double e = std::exp(s[j] - m);
              l += e;
              const uint16_t *vj =
                  &v[b * sk[0] + j * sk[1] + (h / group) * sk[2]];
              for (int64_t x = 0; x < d; ++x)
                out[x] += e * value(vj[x]);
            }
          bool counted = false;
          for (int64_t x = 0; x < d; ++x) {
            double r = l > 0 ? out[x] / l : 0.0;
            if (!std::isfinite(r)) { // an infinite value this row sees
              if (std::isfinite(value(oi[x])))
                worst.outErr = inf, worst.where = "an inf value is lost";
              worst.nonFiniteRows += counted ? 0 : 1;
              counted = true;
              continue;
            }
            maxRef = std::max(maxRef, std::abs(r));
            double e = std::abs(value(oi[x]) - r);
            if ((l == 0 && value(oi[x]) != 0) || std::isnan(e))
              e = inf; // an empty row must be exactly 0; NaN is never close
            if (e > maxErr) {
              maxErr = e;
              where = "b=" + std::to_string(b) + " h=" + std::to_string(h) +
                      " q=" + std::to_string(i);
            }
          }
          double refLse = l > 0 ? m + std::log(l) : -inf;
          double got = lse[(b * hq + h) * shape.nq + i];
          double le = refLse == -inf ? (got == -inf ? 0 : inf)
                                     : std::abs(got - refLse) /
                                           (1e-3 * (1 + std::abs(refLse)));
          lseErr = std::max(lseErr, std::isnan(le) ? inf : le);
        }
      double rel = maxErr / std::max(maxRef, 1e-30) / tol;
      if (rel > worst.outErr) {
        worst.outErr = rel;
        worst.where = name + " layer position " + std::to_string(position) +
                      " " + where;
      }
      worst.lseErr = std::max(worst.lseErr, lseErr);
    }
  }
  return worst;
}

class EmulatorTest : public ::testing::Test {
protected:
  EmulatorTest() { ctx.getOrLoadDialect<attn::AttnDialect>(); }
  mlir::MLIRContext ctx;
};

/// Every layer of the variants bundle on three shapes: Nq < Nk, Nq > Nk
/// (rows before the first key: empty), Nq = Nk; two batches; both loads.
TEST_F(EmulatorTest, VariantsMatchFloat64) {
  for (Shape shape : {Shape{2, 100, 130, true}, Shape{1, 131, 70, false},
                      Shape{1, 64, 64, true}}) {
    Result r = runBundle("emulation", shape, ctx);
    EXPECT_LE(r.outErr, 1.0) << r.where;
    EXPECT_LE(r.lseErr, 1.0) << r.where;
  }
}

/// HopperForward.cuh's kernel (issue 18: producer and consumer
/// warpgroups, TMA into an mbarrier ring, wgmma) on the variants bundle's
/// head_dim 64 and 128 layers: Nq < Nk, Nq > Nk, Nq = Nk, two batches.
TEST_F(EmulatorTest, HopperKernelMatchesFloat64) {
  tessera_emu::resetLeftoverArrivals();
  for (Shape shape : {Shape{2, 100, 130, true}, Shape{1, 131, 70, true},
                      Shape{1, 64, 64, true}}) {
    Result r = runBundle("emulation", shape, ctx, {}, /*hopper=*/true);
    EXPECT_LE(r.outErr, 1.0) << r.where;
    EXPECT_LE(r.lseErr, 1.0) << r.where;
  }
  // The shipped bundles' twins (their layers of head_dim 64 and 128).
  for (const char *name :
       {"llama3-8b-sparse", "video-dit", "s2-strided", "tiny-mix"}) {
    Result r = runBundle(name, Shape{1, 72, 72, true}, ctx, {}, true);
    EXPECT_LE(r.outErr, 1.0) << name << ": " << r.where;
    EXPECT_LE(r.lseErr, 1.0) << name << ": " << r.where;
  }
  {
    Result r = runBundle("mminference-video", Shape{1, 200, 1400, true}, ctx,
                         {}, true);
    EXPECT_LE(r.outErr, 1.0) << "mminference-video: " << r.where;
    EXPECT_LE(r.lseErr, 1.0) << "mminference-video: " << r.where;
  }
  // The consumers' ping-pong closes every named-barrier round it opens.
  EXPECT_EQ(tessera_emu::leftoverArrivals(), 0u);
  // Non-finite values reach only the rows that see them (the guarded
  // second pass).
  Result r = runBundle("emulation", Shape{1, 100, 130, true}, ctx,
                       Poison{70, -1, -1}, /*hopper=*/true);
  EXPECT_LE(r.outErr, 1.0) << r.where;
  EXPECT_GT(r.nonFiniteRows, 0);
  // Broken copies (test/Unit/CMakeLists.txt): the value tile's descriptor
  // with its two offsets swapped, and no vote for the guarded pass.
  tessera_emu::resetLeftoverArrivals();
  EXPECT_GT(runBundle("broken-hopper-values", Shape{1, 100, 130, true}, ctx,
                      {}, true)
                .outErr,
            1.0);
  EXPECT_GT(runBundle("broken-hopper-vote", Shape{1, 100, 130, true}, ctx,
                      Poison{70, -1, -1}, true)
                .outErr,
            1.0);
  // A ping-pong whose consumer 0 does not take consumer 1's last
  // hand-over: its results may be right, but a round is left open.
  tessera_emu::resetLeftoverArrivals();
  runBundle("broken-hopper-turn", Shape{1, 100, 130, true}, ctx, {}, true);
  EXPECT_GT(tessera_emu::leftoverArrivals(), 0u);
}

/// Every layer of every shipped bundle at a small length; mminference-
/// video past its 256-token prompt and into a second frame (at 72 tokens
/// its prompt's rows and columns would cover every pair).
TEST_F(EmulatorTest, ShippedBundlesMatchFloat64) {
  for (const char *name :
       {"llama3-8b-sparse", "video-dit", "s2-strided", "tiny-mix"}) {
    Result r = runBundle(name, Shape{1, 72, 72, true}, ctx);
    EXPECT_LE(r.outErr, 1.0) << r.where;
    EXPECT_LE(r.lseErr, 1.0) << r.where;
  }
  Result r = runBundle("mminference-video", Shape{1, 200, 1400, true}, ctx);
  EXPECT_LE(r.outErr, 1.0) << r.where;
  EXPECT_LE(r.lseErr, 1.0) << r.where;
}

/// Non-finite inputs reach only the rows that see them (docs/runtime.md):
/// an infinite value, a NaN key and a NaN query row, each in partial tiles
/// (the keys sit on the diagonal tile of causal heads and inside windows)
/// and full ones, on every layer of the variants bundle and tiny-mix.
TEST_F(EmulatorTest, NonFiniteInputsReachOnlyTheRowsThatSeeThem) {
  for (const char *name : {"emulation", "tiny-mix"})
    for (Poison poison : {Poison{70, -1, -1}, Poison{-1, 67, -1},
                          Poison{-1, -1, 40}, Poison{3, 90, 99}}) {
      Result r = runBundle(name, Shape{1, 100, 130, true}, ctx, poison);
      EXPECT_LE(r.outErr, 1.0) << name << " " << r.where;
      EXPECT_LE(r.lseErr, 1.0) << name << " " << r.where;
      EXPECT_GT(r.nonFiniteRows, 0) << name; // the check saw poisoned rows
    }
  // Without the guard of partial tiles, the infinite value reaches rows
  // that cannot see it (0 * inf in P V).
  Result r = runBundle("broken-guard", Shape{1, 100, 130, true}, ctx,
                       Poison{70, -1, -1});
  EXPECT_GT(r.outErr, 1.0);
}

/// The comparison catches layout, reduction, barrier and pipeline bugs: the
/// same bundle with the row maximum reduced over one lane too few, with the
/// two halves of the key fragment swapped, without the barrier after the key
/// tile's copy, without the wait for the value tile's copies, with the wait
/// before S = Q K^T one group short (an off-by-one stage), with unswizzled
/// copies read swizzled, or with the .trans matrices' addresses swapped
/// between lanes, is far off (test/Unit/CMakeLists.txt makes them).
TEST_F(EmulatorTest, BrokenKernelsFail) {
  for (const char *name :
       {"broken-shfl", "broken-mma", "broken-sync", "broken-wait",
        "broken-stage", "broken-swizzle", "broken-trans"}) {
    Result r = runBundle(name, Shape{1, 100, 130, true}, ctx);
    EXPECT_GT(std::max(r.outErr, r.lseErr), 1.0) << name;
  }
}

/// The distinct head dims of a bundle's layers, from its manifest.
std::vector<int64_t> headDims(const std::string &name) {
  std::vector<int64_t> dims;
  auto buf =
      llvm::MemoryBuffer::getFile(std::string(TESSERA_BINARY_DIR) +
                                  "/test/bundles/" + name + "/manifest.json");
  if (!buf)
    return dims;
  llvm::Expected<json::Value> manifest = json::parse((*buf)->getBuffer());
  if (!manifest) {
    llvm::consumeError(manifest.takeError());
    return dims;
  }
  for (const json::Value &lv : *manifest->getAsObject()->getArray("layers")) {
    int64_t d = *lv.getAsObject()->getInteger("head_dim");
    bool seen = false;
    for (int64_t x : dims)
      seen |= x == d;
    if (!seen)
      dims.push_back(d);
  }
  return dims;
}

/// The pipelined kernel's shared-memory traffic is free of bank conflicts
/// (the emulator counts the wavefronts of every ldmatrix matrix and of every
/// warp-wide cp.async, tessera_emu::bankCounts) at head_dim 64 (tiny-mix)
/// and 128 (video-dit). Without the swizzle (broken-conflict: TileLayout
/// unswizzled for the copies and ldmatrix alike, so the results stay right)
/// the 8 rows of an ldmatrix matrix share 4 banks: the counter must see more
/// wavefronts than for the same layers swizzled (emulation), and the same
/// for the copies, which write whole rows per quarter warp either way.
TEST_F(EmulatorTest, MainLoopsAreBankConflictFree) {
  using tessera_emu::BankCounts;
  using tessera_emu::BankCpAsync;
  using tessera_emu::BankLdmatrix;
  for (auto [name, dim] :
       {std::pair<const char *, int64_t>{"tiny-mix", 64},
        std::pair<const char *, int64_t>{"video-dit", 128}}) {
    ASSERT_EQ(headDims(name), std::vector<int64_t>{dim}) << name;
    tessera_emu::resetBankCounts();
    Result r = runBundle(name, Shape{1, 100, 130, true}, ctx);
    EXPECT_LE(r.outErr, 1.0) << r.where;
    EXPECT_LE(r.lseErr, 1.0) << r.where;
    for (int kind : {BankLdmatrix, BankCpAsync}) {
      BankCounts c = tessera_emu::bankCounts(kind);
      EXPECT_GT(c.requests, 0u) << name << " kind " << kind;
      EXPECT_EQ(c.wavefronts, c.ideal) << name << " kind " << kind;
    }
  }

  BankCounts counts[2][2]; // [swizzled, unswizzled][kind]
  for (int broken = 0; broken < 2; ++broken) {
    const char *name = broken ? "broken-conflict" : "emulation";
    tessera_emu::resetBankCounts();
    Result r = runBundle(name, Shape{1, 100, 130, true}, ctx);
    EXPECT_LE(r.outErr, 1.0) << name << " " << r.where;
    EXPECT_LE(r.lseErr, 1.0) << name << " " << r.where;
    for (int kind : {BankLdmatrix, BankCpAsync})
      counts[broken][kind] = tessera_emu::bankCounts(kind);
  }
  const BankCounts &ld = counts[0][BankLdmatrix];
  const BankCounts &ldBroken = counts[1][BankLdmatrix];
  EXPECT_GT(ld.requests, 0u);
  EXPECT_EQ(ldBroken.requests, ld.requests);
  EXPECT_GT(ldBroken.wavefronts, ld.wavefronts);
  EXPECT_EQ(counts[1][BankCpAsync].requests, counts[0][BankCpAsync].requests);
  EXPECT_EQ(counts[1][BankCpAsync].wavefronts,
            counts[0][BankCpAsync].wavefronts);
}

} // namespace
