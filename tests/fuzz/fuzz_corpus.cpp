// libFuzzer target: the skipgram corpus parser on any bytes. It must
// return a corpus whose tokens are rows of its vocabulary, or throw
// embtrain::Error.
#include <cstdlib>
#include <string>

#include "embtrain/errors.hpp"
#include "embtrain/workloads/skipgram.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // The first byte picks the settings, the rest is the text.
  const embtrain::TextOptions options{(data[0] & 1) != 0, (data[0] & 0x20) != 0};
  const int64_t min_count = 1 + ((data[0] >> 1) & 3);
  const double eval_fraction = ((data[0] >> 3) & 3) * 0.125;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  embtrain::Corpus c;
  try {
    c = embtrain::parse_corpus(text, "fuzz.txt", options, min_count, eval_fraction);
  } catch (const embtrain::Error&) {
    return 0;
  }
  const int64_t vocab = c.vocab.size();
  for (const embtrain::TokenStream* s : {&c.train, &c.heldout}) {
    for (int32_t t : s->tokens)
      if (t < 0 || t >= vocab) std::abort();
    if (s->line_begin.back() != s->size()) std::abort();
  }
  return 0;
}
