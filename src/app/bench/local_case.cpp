// The local engine: the whole table in this process (Embedding), a step
// with no exchange at all, the baseline the sharded engine is held to.
#include "harness.hpp"

namespace embtrain {
namespace app {
namespace bench {

namespace {

class LocalCase : public BenchCase {
 public:
  explicit LocalCase(const CaseSetup& setup)
      : data_(setup.data),
        table_(setup.spec, setup.seed),
        out_(static_cast<size_t>(setup.data.lookups() * setup.spec.dim)) {}

  // One process has no input distribution to overlap: `next` is ignored.
  void step(int64_t b, int64_t) override {
    table_.forward(data_.ids(b), out_.data());
    table_.backward(data_.grad.data());
    table_.step();
  }
  void reset_stats() override { table_.reset_stats(); }
  CaseStats stats() const override { return stats_of(table_.stats()); }

 private:
  const BenchData& data_;
  Embedding table_;
  RowBuffer out_;
};

const CaseRegistration kRegistration("local", construct_case<LocalCase>);

}  // namespace

}  // namespace bench
}  // namespace app
}  // namespace embtrain
