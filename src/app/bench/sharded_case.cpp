// The sharded engine on the CPU: the table row-sharded over the job's ranks
// (ShardedEmbedding), each step exchanging ids, rows and gradients, fed
// from host memory.
#include "sharded_engine_case.hpp"

namespace embtrain {
namespace app {
namespace bench {

namespace {

class ShardedCase : public ShardedEngineCase {
 public:
  explicit ShardedCase(const CaseSetup& setup)
      : ShardedEngineCase(setup),
        data_(setup.data),
        out_(static_cast<size_t>(setup.data.outputs() * setup.spec.dim)) {}

  void step(int64_t b, int64_t next) override {
    if (data_.pooled)
      table_.forward({data_.ids(b)}, {data_.bags()}, {out_.data()});
    else
      table_.forward({data_.ids(b)}, {out_.data()});
    if (next >= 0) table_.prefetch({data_.ids(next)});
    table_.backward({data_.grad.data()});
    table_.step();
  }

 private:
  const BenchData& data_;
  RowBuffer out_;
};

const CaseRegistration kRegistration("sharded", construct_case<ShardedCase>);

}  // namespace

}  // namespace bench
}  // namespace app
}  // namespace embtrain
