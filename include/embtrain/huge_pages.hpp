// An allocator for big tables: 2 MiB-aligned blocks advised as transparent
// huge pages, so random row accesses across gigabytes of weights and
// optimizer state do not miss the TLB on every row.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace embtrain {

template <typename T>
struct HugePageAllocator {
  using value_type = T;
  static constexpr size_t kHugePage = size_t{2} << 20;

  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) {}

  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    // Small blocks gain nothing from huge pages; keep them cheap.
    const size_t align = bytes >= kHugePage ? kHugePage : alignof(std::max_align_t) * 4;
    const size_t rounded = (bytes + align - 1) / align * align;
    void* p = std::aligned_alloc(align, rounded == 0 ? align : rounded);
    if (!p) throw std::bad_alloc();
    if (align == kHugePage) madvise(p, rounded, MADV_HUGEPAGE);  // a hint: failure is harmless
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  // resize(n) leaves new elements default-initialised (a float: unset), and
  // resize(n, v) / assign fill as usual: a table's rows are drawn, read or
  // filled right after, by all threads, so each page is first touched (and
  // zeroed by the kernel, and placed on its NUMA node) by the thread that
  // fills it, not all by one memset first.
  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible<U>::value) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }

  template <typename U>
  bool operator==(const HugePageAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const HugePageAllocator<U>&) const { return false; }
};

// Rows of a table or its optimizer state (resize(n) leaves them unset).
using RowBuffer = std::vector<float, HugePageAllocator<float>>;

}  // namespace embtrain
