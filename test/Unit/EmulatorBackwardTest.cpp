//===- EmulatorBackwardTest.cpp - the CUDA backward kernels, on the host --===//
//
// FlashBackward.cuh's kernels (bwdPreprocess, the key-major dK / dV pass
// over the transposed schedule, the query-major dQ pass over the forward's
// runs) run under the thread-block emulator on the emulation bundle's
// layers of head_dim 64, 96 and 128 (test/Unit/BackwardKernels.inc: f16
// and bf16, GQA 2:1, a skipped head, partial and full tiles, rows without
// keys, keys no row sees), and dQ, dK, dV are compared with a float64
// backward computed here from the formulas over the pattern's allowed
// pairs (the reference semantics of the manifest's patterns, parsed anew;
// the forward's O and LSE are float64 too, O rounded to the input type as
// the kernels read it). Two broken copies of the kernels (test/Unit/
// CMakeLists.txt) must fail the same comparison.
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
#include "tessera/kernel/BackwardParams.h"

using namespace tessera;
namespace json = llvm::json;

namespace {

/// The kernels' BwdParams (BackwardParams.h, the host's copy; the bundle's
/// lives in its own namespace) and BackwardKernels.inc's BwdLaunch, laid
/// out alike.
using BwdParams = kernel::BwdParams;
using BwdStrides = kernel::BwdStrides;
struct BwdLaunch {
  BwdParams p;
  const kernel::Node *nodes;
  const int64_t *data;
  const int64_t *groupBegin;
  int64_t numGroups;
};

struct Shape {
  int64_t batch, nq, nk;
  bool vectorLoads; ///< 16-byte aligned rows (else odd padding)
};

/// The worst error of each gradient relative to its tolerance (1 is the
/// limit), where, and how many layers ran.
struct Result {
  double dq = 0, dk = 0, dv = 0;
  std::string where;
  int layers = 0;
  int64_t emptyRows = 0, unseenKeys = 0; ///< exact zeros checked
  int64_t nonFinite = 0; ///< gradients the reference makes NaN or infinite
};

/// Non-finite inputs planted in every batch and head (-1: none): element 0
/// of value row vKey infinite, key row kKey NaN, query row qRow NaN, element
/// 3 of dO row dORow infinite. The float64 reference sums over the allowed
/// pairs only, so a gradient must come out non-finite exactly where it does
/// (a masked pair adds nothing, docs/backward.md).
struct Poison {
  int64_t vKey = -1, kKey = -1, qRow = -1, dORow = -1;
};

/// Runs the backward kernels of `bundle` (the emulation bundle or a broken
/// copy) on every layer of head_dim 64, 96 and 128 of the emulation
/// bundle's manifest (only those of head_dim `onlyDim` where it is not 0),
/// with softmax scale `scaleArg` (0: 1 / sqrt(D)); `withDLse`: the loss
/// also reads the LSE (a random dL/dLSE per row).
Result runBackward(const std::string &bundle, const Shape &shape,
                   mlir::MLIRContext &ctx, double scaleArg = 0,
                   int64_t onlyDim = 0, bool withDLse = false,
                   const Poison &poison = {}) {
  std::string dir = std::string(TESSERA_BINARY_DIR) + "/test/bundles/emulation";
  auto buf = llvm::MemoryBuffer::getFile(dir + "/manifest.json");
  EXPECT_TRUE(bool(buf)) << dir;
  llvm::Expected<json::Value> manifest = json::parse((*buf)->getBuffer());
  EXPECT_TRUE(bool(manifest));
  Result worst;
  std::mt19937_64 rng(11);
  std::normal_distribution<float> dist(0, 1);
  auto &reg = tessera_emu::registry();
  for (const json::Value &lv : *manifest->getAsObject()->getArray("layers")) {
    const json::Object &layer = *lv.getAsObject();
    const int64_t hq = *layer.getInteger("num_heads");
    const int64_t hkv = *layer.getInteger("num_kv_heads");
    const int64_t d = *layer.getInteger("head_dim");
    const int64_t position = *layer.getInteger("position");
    const bool f16 = *layer.getString("dtype") == "f16";
    if ((d != 64 && d != 96 && d != 128) || (onlyDim && d != onlyDim))
      continue;
    const std::string prefix = bundle + "/backward/" + (f16 ? "f16" : "bf16") +
                               "_d" + std::to_string(d) + "/";
    // The reference pattern of every head; skipped heads have none.
    std::vector<std::optional<semantics::Pattern>> ref(hq);
    for (const json::Value &g : *layer.getArray("groups")) {
      auto attr = llvm::dyn_cast_or_null<attn::PatternAttrInterface>(
          mlir::parseAttribute(*g.getAsObject()->getString("pattern"), &ctx));
      EXPECT_TRUE(bool(attr));
      for (const json::Value &h : *g.getAsObject()->getArray("heads"))
        ref[*h.getAsInteger()] = semantics::fromAttr(attr);
    }
    const int64_t numComputed =
        int64_t(layer.getArray("computed_heads")->size());
    // The schedule program, for the kernels' transposed walk.
    const json::Object &prog = *layer.getObject("program");
    std::vector<kernel::Node> nodes;
    for (const json::Value &n : *prog.getArray("nodes")) {
      int64_t f[7];
      for (size_t i = 0; i < 7; ++i)
        f[i] = *(*n.getAsArray())[i].getAsInteger();
      nodes.push_back({f[0], f[1], f[2], f[3], f[4], f[5], f[6], 0});
    }
    std::vector<int64_t> data, groupBegin;
    for (const json::Value &x : *prog.getArray("data"))
      data.push_back(*x.getAsInteger());
    for (const json::Value &x : *prog.getArray("group_begin"))
      groupBegin.push_back(*x.getAsInteger());
    if (data.empty())
      data.push_back(0);

    // [batch, seq, heads, d] with padding, as EmulatorTest.
    const int64_t pad = shape.vectorLoads ? 8 : 2;
    auto strides = [&](int64_t seq, int64_t heads) {
      int64_t sh = d + pad, ss = heads * sh + pad;
      return BwdStrides{seq * ss + pad, ss, sh};
    };
    const BwdStrides sq = strides(shape.nq, hq), sk = strides(shape.nk, hkv);
    const size_t qn = shape.batch * sq.b, kn = shape.batch * sk.b;
    auto round = [&](double x) {
      return f16 ? cpu::floatToF16(float(x)) : cpu::floatToBf16(float(x));
    };
    auto value = [&](uint16_t x) {
      return double(f16 ? cpu::f16ToFloat(x) : cpu::bf16ToFloat(x));
    };
    const uint16_t sentinel = round(7.0);
    std::vector<uint16_t> q(qn), k(kn), v(kn), dO(qn), o(qn, 0);
    for (auto *t : {&q, &k, &v, &dO})
      for (uint16_t &x : *t)
        x = round(dist(rng));
    std::vector<uint16_t> dq(qn, sentinel), dk(kn, sentinel), dv(kn, sentinel);
    for (int64_t b = 0; b < shape.batch; ++b) {
      for (int64_t h = 0; h < hkv; ++h) {
        if (poison.vKey >= 0)
          v[b * sk.b + poison.vKey * sk.s + h * sk.h] = round(INFINITY);
        for (int64_t x = 0; poison.kKey >= 0 && x < d; ++x)
          k[b * sk.b + poison.kKey * sk.s + h * sk.h + x] = round(NAN);
      }
      for (int64_t h = 0; h < hq; ++h) {
        for (int64_t x = 0; poison.qRow >= 0 && x < d; ++x)
          q[b * sq.b + poison.qRow * sq.s + h * sq.h + x] = round(NAN);
        if (poison.dORow >= 0)
          dO[b * sq.b + poison.dORow * sq.s + h * sq.h + 3] = round(INFINITY);
      }
    }
    std::vector<float> lse(shape.batch * hq * shape.nq);
    std::vector<float> delta(shape.batch * hq * shape.nq, 7.0f);
    std::vector<float> dLse(shape.batch * hq * shape.nq, 0.0f);
    for (float &x : dLse)
      x = withDLse ? dist(rng) : 0.0f;
    auto at = [](const BwdStrides &s, int64_t b, int64_t i, int64_t h) {
      return b * s.b + i * s.s + h * s.h;
    };

    // float64: the forward (O, LSE), then the backward from the formulas.
    const double scale = scaleArg ? scaleArg : 1.0 / std::sqrt(double(d));
    const double inf = std::numeric_limits<double>::infinity();
    const int64_t group = hq / hkv;
    std::vector<double> rq(qn, 0), rk(kn, 0), rv(kn, 0);
    std::vector<char> keySeen(shape.batch * hkv * shape.nk, 0);
    std::vector<double> s(shape.nk), p(shape.nk), out(d);
    for (int64_t b = 0; b < shape.batch; ++b)
      for (int64_t h = 0; h < hq; ++h) {
        const int64_t kvh = h / group;
        for (int64_t i = 0; i < shape.nq; ++i) {
          double m = -inf;
          for (int64_t j = 0; j < shape.nk; ++j) {
            s[j] = -inf;
            if (!ref[h] ||
                !semantics::allowed(*ref[h], i, j, h, shape.nq, shape.nk, hq))
              continue;
            double dot = 0;
            for (int64_t x = 0; x < d; ++x)
              dot += value(q[at(sq, b, i, h) + x]) *
                     value(k[at(sk, b, j, kvh) + x]);
            s[j] = dot * scale;
            m = std::max(m, s[j]);
          }
          double l = 0;
          for (int64_t j = 0; j < shape.nk; ++j)
            l += s[j] == -inf ? 0 : std::exp(s[j] - m);
          // A NaN score makes l NaN, and the LSE NaN.
          const double lseI = l == 0 ? -inf : m + std::log(l);
          lse[(b * hq + h) * shape.nq + i] = float(lseI);
          std::fill(out.begin(), out.end(), 0.0);
          for (int64_t j = 0; j < shape.nk; ++j) {
            p[j] = s[j] == -inf ? 0 : std::exp(s[j] - lseI);
            for (int64_t x = 0; s[j] != -inf && x < d; ++x)
              out[x] += p[j] * value(v[at(sk, b, j, kvh) + x]);
          }
          // D_i from O as the kernels read it; dL/dLSE adds dLse_i P to dS.
          double di = -double(dLse[(b * hq + h) * shape.nq + i]);
          for (int64_t x = 0; x < d; ++x) {
            o[at(sq, b, i, h) + x] = round(out[x]);
            di +=
                value(dO[at(sq, b, i, h) + x]) * value(o[at(sq, b, i, h) + x]);
          }
          if (!ref[h])
            continue;
          for (int64_t j = 0; j < shape.nk; ++j) {
            if (s[j] == -inf)
              continue;
            keySeen[b * hkv * shape.nk + kvh * shape.nk + j] = 1;
            double dp = 0;
            for (int64_t x = 0; x < d; ++x)
              dp += value(dO[at(sq, b, i, h) + x]) *
                    value(v[at(sk, b, j, kvh) + x]);
            const double ds = p[j] * (dp - di);
            for (int64_t x = 0; x < d; ++x) {
              rv[at(sk, b, j, kvh) + x] +=
                  p[j] * value(dO[at(sq, b, i, h) + x]);
              rk[at(sk, b, j, kvh) + x] +=
                  scale * ds * value(q[at(sq, b, i, h) + x]);
              rq[at(sq, b, i, h) + x] +=
                  scale * ds * value(k[at(sk, b, j, kvh) + x]);
            }
          }
        }
      }

    // The kernels: D_i, the program for the transposed walk, dK / dV, dQ.
    BwdLaunch l{};
    BwdParams &bp = l.p;
    bp.q = q.data();
    bp.k = k.data();
    bp.v = v.data();
    bp.o = o.data();
    bp.dO = dO.data();
    bp.lse = lse.data();
    bp.dLse = withDLse ? dLse.data() : nullptr;
    bp.delta = delta.data();
    bp.dq = dq.data();
    bp.dk = dk.data();
    bp.dv = dv.data();
    bp.nq = shape.nq;
    bp.nk = shape.nk;
    bp.qs = bp.os = bp.dOs = bp.dqs = sq;
    bp.ks = bp.vs = bp.dks = bp.dvs = sk;
    bp.scale = float(scale);
    bp.scaleLog2 = float(scale * 1.4426950408889634);
    bp.numHeads = int(hq);
    bp.numKvHeads = int(hkv);
    bp.vectorLoads = shape.vectorLoads ? 1 : 0;
    l.nodes = nodes.data();
    l.data = data.data();
    l.groupBegin = groupBegin.data();
    l.numGroups = int64_t(groupBegin.size()) - 1;
    for (const std::string &name :
         {prefix + "pre", prefix + "dkdv", prefix + "dq",
          prefix + "dkdv_guarded", prefix + "dq_guarded",
          bundle + "/backward/program"})
      if (!reg.count(name)) {
        ADD_FAILURE() << "no kernel " << name;
        return worst;
      }
    reg[bundle + "/backward/program"](&l, int(position));
    auto run = [&](const char *kind, unsigned gx, unsigned gy,
                   unsigned threads) {
      auto &fn = reg[prefix + kind];
      tessera_emu::launch([&] { fn(&l, int(position)); },
                          dim3{gx, gy, unsigned(shape.batch)},
                          dim3{threads, 1, 1});
    };
    run("pre", unsigned((shape.nq + 127) / 128), unsigned(hq), 128);
    // BwdKeyShape: above head_dim 64, two sets of 4 warps split dK and dV's
    // columns.
    run("dkdv", unsigned((shape.nk + 63) / 64), unsigned(hkv),
        d > 64 ? 256 : 128);
    run("dq", unsigned((shape.nq + 63) / 64), unsigned(numComputed), 128);
    // The guarded second launches: blocks whose gradients came out
    // non-finite walk again with the guard of partial tiles.
    run("dkdv_guarded", unsigned((shape.nk + 63) / 64), unsigned(hkv),
        d > 64 ? 256 : 128);
    run("dq_guarded", unsigned((shape.nq + 63) / 64), unsigned(numComputed),
        128);
    ++worst.layers;

    // Compare: per tensor, the largest error over the largest reference
    // value; rows without keys and keys no row sees must be exact zeros.
    // The forward's tolerances (EmulatorTest): P and dS are rounded to the
    // input type for the tensor-core products, as P is in the forward.
    const double tol = f16 ? 2e-3 : 1.6e-2;
    auto compare = [&](const std::vector<uint16_t> &got,
                       const std::vector<double> &want, int64_t seq,
                       int64_t heads, const BwdStrides &st, bool queries,
                       double &err, const char *name) {
      double maxRef = 0, maxErr = 0;
      std::string where;
      for (int64_t b = 0; b < shape.batch; ++b)
        for (int64_t h = 0; h < heads; ++h) {
          if (queries && !ref[h])
            continue; // a skipped head's dq is the caller's (zero fill)
          for (int64_t i = 0; i < seq; ++i) {
            bool zero = queries
                            ? lse[(b * hq + h) * shape.nq + i] == -INFINITY
                            : !keySeen[b * hkv * shape.nk + h * shape.nk + i];
            for (int64_t x = 0; x < d; ++x) {
              const double g = value(got[at(st, b, i, h) + x]);
              const double r = want[at(st, b, i, h) + x];
              if (!std::isfinite(r)) { // it must stay non-finite
                ++worst.nonFinite;
                if (std::isfinite(g)) {
                  maxErr = inf;
                  where = std::string(name) + " layer " +
                          std::to_string(position) +
                          ": a non-finite gradient is lost";
                }
                continue;
              }
              double e = std::abs(g - r);
              if ((zero && g != 0) || std::isnan(e))
                e = inf;
              maxRef = std::max(maxRef, std::abs(r));
              if (e > maxErr) {
                maxErr = e;
                where =
                    std::string(name) + " layer " + std::to_string(position) +
                    " b=" + std::to_string(b) + " h=" + std::to_string(h) +
                    " row " + std::to_string(i) + " x=" + std::to_string(x) +
                    " got " + std::to_string(g) + " want " + std::to_string(r);
              }
            }
            if (zero)
              ++(queries ? worst.emptyRows : worst.unseenKeys);
          }
        }
      const double rel = maxErr / std::max(maxRef, 1e-30) / tol;
      if (rel > std::max({worst.dq, worst.dk, worst.dv}))
        worst.where = where;
      err = std::max(err, rel);
    };
    compare(dq, rq, shape.nq, hq, sq, true, worst.dq, "dq");
    compare(dk, rk, shape.nk, hkv, sk, false, worst.dk, "dk");
    compare(dv, rv, shape.nk, hkv, sk, false, worst.dv, "dv");
  }
  return worst;
}

class EmulatorBackwardTest : public ::testing::Test {
protected:
  EmulatorBackwardTest() { ctx.getOrLoadDialect<attn::AttnDialect>(); }
  mlir::MLIRContext ctx;
};

/// Every layer of head_dim 64, 96 and 128 of the emulation bundle: Nq < Nk
/// with two batches and 16-byte loads, Nq > Nk (rows before the first key:
/// no keys) with element loads and a loss that also reads the LSE, Nq = Nk
/// on whole tiles with an explicit softmax scale.
TEST_F(EmulatorBackwardTest, GradientsMatchFloat64) {
  struct Case {
    Shape shape;
    double scale; ///< 0: 1 / sqrt(D)
    bool dLse;
  };
  for (const Case &c : {Case{{2, 100, 130, true}, 0.0, false},
                        Case{{1, 131, 70, false}, 0.0, true},
                        Case{{1, 128, 128, true}, 0.3, false}}) {
    Result r =
        runBackward("emulation-backward", c.shape, ctx, c.scale, 0, c.dLse);
    std::printf("errors (1 = tolerance): dq %.3f dk %.3f dv %.3f; %lld empty "
                "rows, %lld unseen keys\n",
                r.dq, r.dk, r.dv, (long long)r.emptyRows,
                (long long)r.unseenKeys);
    EXPECT_EQ(r.layers, 6);
    EXPECT_LE(r.dq, 1.0) << r.where;
    EXPECT_LE(r.dk, 1.0) << r.where;
    EXPECT_LE(r.dv, 1.0) << r.where;
    EXPECT_GT(r.emptyRows, 0) << "the shapes have rows without keys";
    EXPECT_GT(r.unseenKeys, 0) << "the shapes have keys no row sees";
  }
}

/// The backward's shared-memory traffic is free of bank conflicts at
/// head_dim 64 and 128, as the forward's (EmulatorTest.
/// MainLoopsAreBankConflictFree): every ldmatrix matrix and every
/// warp-wide cp.async of the three kernels takes the ideal number of
/// wavefronts of the swizzled TileLayout, counted by the emulator. (At 96,
/// with padded rows, FlashForward.cuh's copyTile has a quarter warp's
/// chunks straddle two rows: its cp.async take a third more wavefronts
/// than ideal; ldmatrix stays ideal.)
TEST_F(EmulatorBackwardTest, SharedMemoryIsBankConflictFree) {
  using tessera_emu::BankCounts;
  for (int64_t dim : {64, 128}) {
    tessera_emu::resetBankCounts();
    Result r = runBackward("emulation-backward", Shape{1, 100, 130, true}, ctx,
                           0, dim);
    EXPECT_LE(std::max({r.dq, r.dk, r.dv}), 1.0) << r.where;
    for (int kind : {tessera_emu::BankLdmatrix, tessera_emu::BankCpAsync}) {
      BankCounts c = tessera_emu::bankCounts(kind);
      EXPECT_GT(c.requests, 0u) << "dim " << dim << " kind " << kind;
      EXPECT_EQ(c.wavefronts, c.ideal) << "dim " << dim << " kind " << kind;
    }
  }
}

/// Non-finite inputs reach only the gradients that depend on them (docs/
/// backward.md): an infinite value, a NaN key, a NaN query row and an
/// infinite dO element, each in partial tiles (the diagonal tiles of causal
/// heads, inside windows) and full ones, on every layer: the guarded second
/// launches redo the blocks the first left non-finite. Without them
/// (broken-bwd-guard: their blocks all return at once) NaN reaches
/// gradients through masked pairs, in every case.
TEST_F(EmulatorBackwardTest, NonFiniteInputsReachOnlyTheirGradients) {
  for (Poison poison :
       {Poison{70, -1, -1, -1}, Poison{-1, 67, -1, -1}, Poison{-1, -1, 40, -1},
        Poison{-1, -1, -1, 99}, Poison{3, 90, 99, 40}}) {
    Result r = runBackward("emulation-backward", Shape{1, 100, 130, true}, ctx,
                           0, 0, false, poison);
    Result u = runBackward("broken-bwd-guard", Shape{1, 100, 130, true}, ctx, 0,
                           0, false, poison);
    std::printf("poison %lld %lld %lld %lld: %lld non-finite gradients, "
                "errors %.3g %.3g %.3g; unguarded %.3g %.3g %.3g\n",
                (long long)poison.vKey, (long long)poison.kKey,
                (long long)poison.qRow, (long long)poison.dORow,
                (long long)r.nonFinite, r.dq, r.dk, r.dv, u.dq, u.dk, u.dv);
    EXPECT_LE(r.dq, 1.0) << r.where;
    EXPECT_LE(r.dk, 1.0) << r.where;
    EXPECT_LE(r.dv, 1.0) << r.where;
    EXPECT_GT(r.nonFinite, 0) << "the check saw poisoned gradients";
    EXPECT_GT(std::max({u.dq, u.dk, u.dv}), 1.0) << "without the guard";
  }
}

/// The comparison catches a dS without its -D term (dK wrong), a
/// transposed walk that stops after its first run of query blocks (dK and
/// dV miss the tiles of the later runs), and a dO tile read before its
/// copies landed (the emulator's poison): test/Unit/CMakeLists.txt makes
/// these copies of FlashBackward.cuh.
TEST_F(EmulatorBackwardTest, BrokenKernelsFail) {
  for (const char *name :
       {"broken-bwd-delta", "broken-bwd-walk", "broken-bwd-wait"}) {
    Result r = runBackward(name, Shape{1, 100, 130, true}, ctx);
    std::printf("%s: dq %.3g dk %.3g dv %.3g (%s)\n", name, r.dq, r.dk, r.dv,
                r.where.c_str());
    EXPECT_EQ(r.layers, 6) << name;
    EXPECT_GT(std::max({r.dq, r.dk, r.dv}), 1.0) << name;
  }
}

} // namespace
