//===- DynamicTest.cpp - built dynamic indices as static patterns --------===//
//
// A vertical-slash or block top-k index, specialised to a static pattern,
// allows exactly the pairs of the index (pair by pair, several shapes), and
// the CPU executor over its schedule computes what attention over the
// index's key lists computes.

#include "tessera/cpu/Dynamic.h"
#include "tessera/Schedule/Lower.h"
#include "tessera/Schedule/Specialize.h"
#include "tessera/cpu/Executor.h"

#include <gtest/gtest.h>

#include <random>

using namespace tessera;

namespace {

struct Inputs {
  int64_t nq, nk, d;
  std::vector<float> q, k, v;
  cpu::Rows qr() const { return {q.data(), nq, d}; }
  cpu::Rows kr() const { return {k.data(), nk, d}; }
  cpu::Rows vr() const { return {v.data(), nk, d}; }
};

Inputs make(int64_t nq, int64_t nk, int64_t d, uint32_t seed) {
  Inputs in{nq, nk, d, {}, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  for (auto *x : {&in.q, &in.k, &in.v}) {
    x->resize(size_t((x == &in.q ? nq : nk) * d));
    for (float &e : *x)
      e = normal(rng);
  }
  return in;
}

/// Runs `pattern` (one head) through lowering and the CPU executor.
std::vector<float> execute(const Inputs &in, const semantics::Pattern &p,
                           std::vector<float> &lse) {
  schedule::LayerSchedule table;
  std::string error;
  EXPECT_TRUE(schedule::buildLayerSchedule({{p, {0}}}, 1, table, error))
      << error;
  std::vector<float> o(static_cast<size_t>(in.nq * in.d));
  lse.assign(size_t(in.nq), 0);
  cpu::LayerArgs args;
  args.q = cpu::contiguous(const_cast<float *>(in.q.data()), cpu::DType::F32, 1,
                           in.nq, 1, in.d);
  args.k = cpu::contiguous(const_cast<float *>(in.k.data()), cpu::DType::F32, 1,
                           in.nk, 1, in.d);
  args.v = cpu::contiguous(const_cast<float *>(in.v.data()), cpu::DType::F32, 1,
                           in.nk, 1, in.d);
  args.o = cpu::contiguous(o.data(), cpu::DType::F32, 1, in.nq, 1, in.d);
  args.lse = lse.data();
  args.blockQ = args.blockK = 16;
  EXPECT_EQ(cpu::runLayer(table.table(), args), "");
  return o;
}

TEST(Dynamic, VerticalSlashSpecialisedAllowsTheIndex) {
  for (auto [nq, nk, seed] :
       {std::tuple{60, 60, 1u}, {40, 90, 2u}, {90, 40, 3u}, {1, 70, 4u}}) {
    Inputs in = make(nq, nk, 8, seed);
    const cpu::VerticalSlashParams vs{8, 6, 5, 2, 3};
    cpu::VerticalSlashIndex index =
        cpu::buildVerticalSlash(in.qr(), in.kr(), 8, 0.35f, vs);
    semantics::Pattern p =
        schedule::verticalSlashPattern(index.columns, index.diagonals);
    for (int64_t q = 0; q < nq; ++q)
      for (int64_t k = 0; k < nk; ++k)
        ASSERT_EQ(semantics::allowed(p, q, k, 0, nq, nk, 1),
                  cpu::verticalSlashAllows(index, q, k, nq, nk))
            << nq << "x" << nk << " pair " << q << "," << k;

    // The executor over the specialised (causal) pattern computes attention
    // over the index's key lists.
    semantics::Pattern causal{
        semantics::Intersect{{semantics::Pattern{semantics::Causal{}}, p}}};
    std::vector<float> lse1, lse2(static_cast<size_t>(nq));
    std::vector<float> o1 = execute(in, causal, lse1);
    std::vector<float> o2(static_cast<size_t>(nq * 8));
    cpu::attendKeyLists(
        in.qr(), in.kr(), in.vr(), o2.data(), 8, lse2.data(), 8,
        1.0f / std::sqrt(8.0f), [&](int64_t row, std::vector<int64_t> &keys) {
          for (int64_t k = 0; k <= std::min<int64_t>(row + nk - nq, nk - 1);
               ++k)
            if (cpu::verticalSlashAllows(index, row, k, nq, nk))
              keys.push_back(k);
        });
    for (size_t i = 0; i < o1.size(); ++i)
      ASSERT_NEAR(o1[i], o2[i], 2e-5) << "element " << i;
    for (int64_t r = 0; r < nq; ++r) {
      if (std::isinf(lse2[size_t(r)]))
        EXPECT_TRUE(std::isinf(lse1[size_t(r)]));
      else
        EXPECT_NEAR(lse1[size_t(r)], lse2[size_t(r)], 2e-5);
    }
  }
}

TEST(Dynamic, TiledVerticalSlashMatchesKeyLists) {
  // Blocks of 16 so that ranges, gathered columns and partial blocks all
  // occur; Nq = Nk, Nq < Nk, Nq > Nk, with and without causality.
  for (auto [nq, nk, seed] :
       {std::tuple{100, 100, 5u}, {50, 130, 6u}, {130, 50, 7u}}) {
    Inputs in = make(nq, nk, 8, seed);
    const cpu::VerticalSlashParams vs{10, 12, 7, 3, 2};
    cpu::VerticalSlashIndex index =
        cpu::buildVerticalSlash(in.qr(), in.kr(), 8, 0.35f, vs);
    for (bool causal : {true, false}) {
      std::vector<float> o1(static_cast<size_t>(nq * 8)),
          o2(static_cast<size_t>(nq * 8)), l1(static_cast<size_t>(nq)),
          l2(static_cast<size_t>(nq));
      cpu::TileCounts tiles =
          cpu::attendVerticalSlashTiled(in.qr(), in.kr(), in.vr(), o1.data(), 8,
                                        l1.data(), 8, 0.35f, index, causal, 16);
      EXPECT_GT(tiles.contiguous, 0);
      EXPECT_GT(tiles.gathered, 0);
      cpu::attendKeyLists(
          in.qr(), in.kr(), in.vr(), o2.data(), 8, l2.data(), 8, 0.35f,
          [&](int64_t row, std::vector<int64_t> &keys) {
            int64_t last =
                causal ? std::min<int64_t>(row + nk - nq, nk - 1) : nk - 1;
            for (int64_t k = 0; k <= last; ++k)
              if (cpu::verticalSlashAllows(index, row, k, nq, nk))
                keys.push_back(k);
          });
      for (size_t i = 0; i < o1.size(); ++i)
        ASSERT_NEAR(o1[i], o2[i], 2e-5) << nq << "x" << nk << " " << i;
      for (int64_t r = 0; r < nq; ++r) {
        if (std::isinf(l2[size_t(r)]))
          EXPECT_TRUE(std::isinf(l1[size_t(r)]) && l1[size_t(r)] < 0);
        else
          EXPECT_NEAR(l1[size_t(r)], l2[size_t(r)], 2e-5);
      }
    }
  }
}

TEST(Dynamic, BlockTopkSpecialisedAllowsTheIndex) {
  Inputs in = make(100, 100, 8, 9);
  auto blocks =
      cpu::buildBlockTopk(in.qr(), in.kr(), 8, 0.35f, 16, 0.7, 0, 2, 4);
  ASSERT_EQ(blocks.firstBlock, 0);
  semantics::Pattern p =
      schedule::blockTopkPattern(16, blocks.firstBlock, blocks.lists);
  int64_t kept = 0;
  for (int64_t q = 0; q < 100; ++q)
    for (int64_t k = 0; k < 100; ++k) {
      const auto &kb = blocks.lists[size_t(q / 16)];
      bool want = std::binary_search(kb.begin(), kb.end(), k / 16);
      ASSERT_EQ(semantics::allowed(p, q, k, 0, 100, 100, 1), want);
      kept += want;
    }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, 100 * 100);
}

TEST(Dynamic, EmptyIndexIsSkip) {
  semantics::Pattern p = schedule::verticalSlashPattern({}, {});
  EXPECT_TRUE(std::holds_alternative<semantics::Skip>(p.node));
}

} // namespace
