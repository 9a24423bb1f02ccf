/* cxx_threads.cpp — a multi-threaded C++ program whose objects are created with new in one
 * thread and deleted in another, run under LD_PRELOAD=libobmem-preload.so.
 *
 * THREADS workers pass messages around a ring of mutex-protected mailboxes: each worker
 * builds messages (a std::string, a std::vector<uint64_t>, a std::map, an over-aligned
 * object from the aligned new, a raw new[] array and a std::shared_ptr shared with the
 * sender), sends them to the next worker, and checks and deletes the messages it receives.
 * Every message carries its sender's seed-derived id; its contents are a function of that id,
 * so a block reused while still live, or written after delete, shows up as a mismatch.
 * Workers exit after ROUNDS and main starts new ones (heaps of exited threads get new owners)
 * for GENERATIONS; at the end every message sent must have been received exactly once
 * (sums of ids match) and every allocation must have been obmem's.
 * Usage: cxx_threads [THREADS] [ROUNDS] [GENERATIONS] [SEED]
 */
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <dlfcn.h>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

static std::atomic<long> npassed;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s (seed %llu)\n", __FILE__, __LINE__, #cond,     \
                   (unsigned long long)seed);                                                      \
      std::fflush(stderr);                                                                         \
      std::_Exit(1);                                                                               \
    }                                                                                              \
    npassed.fetch_add(1, std::memory_order_relaxed);                                               \
  } while (0)

static uint64_t seed = 5;
static int (*owns)(const void *);

static uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

struct alignas(128) Aligned {
  uint64_t words[20];
};

struct Message {
  uint64_t id;
  std::string text;
  std::vector<uint64_t> numbers;
  std::map<int, std::string> table;
  Aligned *aligned = nullptr;
  unsigned char *bytes = nullptr;
  std::size_t nbytes = 0;
  std::shared_ptr<std::vector<int>> shared;

  explicit Message(uint64_t message_id) : id(message_id) {
    uint64_t r = mix(id);
    text.assign(static_cast<std::size_t>(r % 300) + 1, char('a' + r % 26));
    numbers.resize(static_cast<std::size_t>((r >> 8) % 2000));
    for (std::size_t i = 0; i < numbers.size(); i++)
      numbers[i] = id * 31 + i;
    for (int i = 0; i < int((r >> 20) % 20); i++)
      table[i] = std::to_string(id + uint64_t(i));
    aligned = new Aligned;
    for (int i = 0; i < 20; i++)
      aligned->words[i] = id ^ uint64_t(i);
    static const std::size_t sizes[] = {8, 100, 600, 5000, 70000, 300000};
    nbytes = sizes[(r >> 32) % 6];
    bytes = new unsigned char[nbytes];
    std::memset(bytes, int(id & 0xFF), nbytes);
    shared = std::make_shared<std::vector<int>>(std::size_t(r % 50) + 1, int(id % 1000));
  }
  ~Message() {
    delete aligned;
    delete[] bytes;
  }
  bool intact() const {
    uint64_t r = mix(id);
    if (text.size() != r % 300 + 1 || text[text.size() - 1] != char('a' + r % 26)) return false;
    for (std::size_t i = 0; i < numbers.size(); i++)
      if (numbers[i] != id * 31 + i) return false;
    if (table.size() != (r >> 20) % 20) return false;
    for (auto &kv : table)
      if (kv.second != std::to_string(id + uint64_t(kv.first))) return false;
    if ((reinterpret_cast<std::uintptr_t>(aligned) & 127) != 0) return false;
    for (int i = 0; i < 20; i++)
      if (aligned->words[i] != (id ^ uint64_t(i))) return false;
    for (std::size_t i = 0; i < nbytes; i += 97)
      if (bytes[i] != (id & 0xFF)) return false;
    return bytes[nbytes - 1] == (id & 0xFF) && shared->back() == int(id % 1000);
  }
  bool from_obmem() const {
    return owns(this) && owns(aligned) && owns(bytes) && owns(shared.get()) &&
           (numbers.empty() || owns(numbers.data())) && (text.size() < 16 || owns(text.data()));
  }
};

struct Mailbox {
  std::mutex lock;
  std::condition_variable ready;
  std::deque<Message *> queue;
};

static int nthreads = 6, rounds = 3000, generations = 3;
static std::vector<Mailbox> *boxes;
static std::atomic<uint64_t> sent_sum, received_sum;
static std::atomic<long> nsent, nreceived;

static void worker(int index, int generation) {
  Mailbox &mine = (*boxes)[std::size_t(index)];
  Mailbox &next = (*boxes)[std::size_t((index + 1) % nthreads)];
  uint64_t state = mix(seed ^ (uint64_t(index) << 32) ^ uint64_t(generation));
  std::vector<std::shared_ptr<std::vector<int>>> kept; /* shared with messages in flight */
  for (int round = 0; round < rounds; round++) {
    state = mix(state);
    auto *m = new Message(state);
    CHECK(m->from_obmem());
    if (round % 16 == 0) kept.push_back(m->shared);
    sent_sum.fetch_add(m->id);
    nsent.fetch_add(1);
    {
      std::lock_guard<std::mutex> g(next.lock);
      next.queue.push_back(m);
    }
    next.ready.notify_one();
    /* receive whatever is there (at most a few), delete it here */
    for (int k = 0; k < 4; k++) {
      Message *in = nullptr;
      {
        std::lock_guard<std::mutex> g(mine.lock);
        if (mine.queue.empty()) break;
        in = mine.queue.front();
        mine.queue.pop_front();
      }
      CHECK(in->intact());
      received_sum.fetch_add(in->id);
      nreceived.fetch_add(1);
      delete in;
    }
    if (kept.size() > 64) kept.erase(kept.begin(), kept.begin() + 32);
  }
}

int main(int argc, char **argv) {
  if (argc > 1) nthreads = std::atoi(argv[1]);
  if (argc > 2) rounds = std::atoi(argv[2]);
  if (argc > 3) generations = std::atoi(argv[3]);
  if (argc > 4 && std::strcmp(argv[4], "-") != 0)
    seed = std::strtoull(argv[4], nullptr, 0);
  else if (const char *s = std::getenv("OBMEM_TEST_SEED"))
    seed = std::strtoull(s, nullptr, 0);
  owns = reinterpret_cast<int (*)(const void *)>(dlsym(RTLD_DEFAULT, "obm_owns"));
  if (owns == nullptr) {
    std::fprintf(stderr, "obm_owns not found: run with LD_PRELOAD=libobmem-preload.so\n");
    return 1;
  }
  std::vector<Mailbox> mailboxes(static_cast<std::size_t>(nthreads));
  boxes = &mailboxes;
  for (int g = 0; g < generations; g++) {
    std::vector<std::thread> threads;
    for (int i = 0; i < nthreads; i++)
      threads.emplace_back(worker, i, g);
    for (auto &t : threads)
      t.join();
    /* what is left in the mailboxes is received by main, a thread that allocated none of it */
    for (auto &box : mailboxes) {
      for (Message *m : box.queue) {
        CHECK(m->intact());
        received_sum.fetch_add(m->id);
        nreceived.fetch_add(1);
        delete m;
      }
      box.queue.clear();
    }
  }
  CHECK(nsent.load() == long(nthreads) * rounds * generations);
  CHECK(nreceived.load() == nsent.load());
  CHECK(received_sum.load() == sent_sum.load());
  std::printf("cxx_threads: %ld passed, 0 failed (seed=%llu)\n", npassed.load(),
              (unsigned long long)seed);
  return 0;
}
