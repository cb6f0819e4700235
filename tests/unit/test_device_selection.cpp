// The pure parts of device selection: which GPU a local rank takes and
// whether a node's ranks can each have their own (NCCL's condition).
#include <gtest/gtest.h>

#include <string>

#include "embtrain/communicator.hpp"
#include "comm/device_selection.hpp"
#include "embtrain/errors.hpp"

namespace {

using embtrain::DataCommKind;
using embtrain::pick_device;

TEST(DeviceSelection, PickDeviceIsRoundRobin) {
  EXPECT_EQ(pick_device(0, 1), 0);
  EXPECT_EQ(pick_device(3, 1), 0);
  EXPECT_EQ(pick_device(0, 4), 0);
  EXPECT_EQ(pick_device(3, 4), 3);
  EXPECT_EQ(pick_device(4, 4), 0);
  EXPECT_EQ(pick_device(7, 2), 1);
}

TEST(DeviceSelection, PickDeviceWithoutDevicesNamesBoth) {
  try {
    pick_device(3, 0);
    FAIL() << "no error";
  } catch (const embtrain::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("local rank 3"), std::string::npos) << message;
    EXPECT_NE(message.find("device count 0"), std::string::npos) << message;
  }
  EXPECT_THROW(pick_device(-1, 2), embtrain::Error);
}

TEST(DeviceSelection, ChooseOnOneProcess) {
  auto self = embtrain::make_self_communicator();
  EXPECT_EQ(embtrain::ranks_on_same_gpu(*self, "any"), 1);
  EXPECT_EQ(embtrain::choose_data_communicator(*self, 1, 1).kind, DataCommKind::kNccl);
  // A GPU shared with another rank of the node rules NCCL out.
  const auto shared = embtrain::choose_data_communicator(*self, 2, 8);
  EXPECT_EQ(shared.kind, DataCommKind::kMpiStaged);
  EXPECT_NE(shared.reason.find("used by 2 rank(s)"), std::string::npos) << shared.reason;
  const auto no_gpu = embtrain::choose_data_communicator(*self, 1, 0);
  EXPECT_EQ(no_gpu.kind, DataCommKind::kMpiStaged);
  EXPECT_NE(no_gpu.reason.find("sees no GPU"), std::string::npos) << no_gpu.reason;
  EXPECT_EQ(embtrain::choose_data_communicator(*self, 1, 2, false).kind,
            DataCommKind::kMpiStaged);
  EXPECT_STREQ(embtrain::data_comm_name(DataCommKind::kNccl), "nccl");
  EXPECT_STREQ(embtrain::data_comm_name(DataCommKind::kMpiStaged), "mpi-staged");
}

}  // namespace
