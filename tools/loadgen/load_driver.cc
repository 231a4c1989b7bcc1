#include "tools/loadgen/load_driver.h"

#include <atomic>
#include <deque>
#include <iostream>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/model/catalog.h"

namespace duet::loadgen {
namespace {

// Errors printed to stderr before going quiet (they are all counted).
constexpr int kMaxLoggedErrors = 5;

}  // namespace

QuerySpec LoadDriver::NextQuery(Rng& rng, int64_t seq) const {
  QuerySpec q;
  q.user = static_cast<int>(seq % std::max(options_.devices, 1));
  candidates_->Sample(counts_->Sample(rng), rng, &q.candidates);
  q.top_k = std::min<int>(options_.top_k, q.candidates.size());
  q.deadline = options_.deadline;
  return q;
}

void LoadDriver::Execute(const QuerySpec& spec, absl::Time intended,
                         bool measured, Rng& rng) {
  {
    common::MutexLock lock(&mu_);
    ++inflight_;
  }
  QueryResult r = target_->Query(spec, rng);
  const absl::Time done = absl::Now();
  QueryOutcome o;
  o.code = r.code;
  o.latency_ns = absl::ToInt64Nanoseconds(done - intended);
  o.bytes_up = r.bytes_up;
  o.bytes_down = r.bytes_down;
  o.candidates = static_cast<int>(spec.candidates.size());
  o.edge_joules = r.edge_joules;
  o.network_joules = r.bytes_up * options_.uplink_joules_per_byte;
  recorder_.Record(o, measured);
  {
    common::MutexLock lock(&mu_);
    --inflight_;
    if (measured && done > last_completion_) last_completion_ = done;
    if (r.code != absl::StatusCode::kOk &&
        errors_logged_++ < kMaxLoggedErrors) {
      std::cerr << "loadgen: query failed: " << StatusCodeName(r.code) << ": "
                << r.message
                << (errors_logged_ == kMaxLoggedErrors
                        ? " (further errors are only counted)"
                        : "")
                << "\n";
    }
  }
  if (r.code == absl::StatusCode::kOk && !r.items.empty() &&
      options_.interaction_rate > 0 &&
      std::bernoulli_distribution(options_.interaction_rate)(rng)) {
    const int64_t item = r.items[std::uniform_int_distribution<size_t>(
        0, r.items.size() - 1)(rng)];
    const absl::Status s =
        target_->Interact(spec.user, item, options_.deadline);
    if (measured) recorder_.RecordInteraction(s.ok());
  }
}

void LoadDriver::RunClosed() {
  std::atomic<int64_t> issued{0};
  std::atomic<int64_t> seq{0};
  const absl::Time end = measure_start_ + options_.duration;
  auto worker = [&](int w) {
    Rng rng(common::Mix(options_.seed * 1000003 + w));
    while (true) {
      const absl::Time now = absl::Now();
      const bool measured = now >= measure_start_;
      if (measured) {
        if (options_.queries > 0) {
          if (issued.fetch_add(1) >= options_.queries) return;
        } else if (now >= end) {
          return;
        }
      }
      const QuerySpec q = NextQuery(rng, seq.fetch_add(1));
      Execute(q, absl::Now(), measured, rng);
    }
  };
  std::vector<std::thread> threads;
  for (int w = 0; w < std::max(options_.concurrency, 1); ++w) {
    threads.emplace_back(worker, w);
  }
  for (auto& t : threads) t.join();
}

void LoadDriver::RunOpen() {
  struct Ticket {
    absl::Time intended;
    bool measured;
    int64_t seq;
  };
  common::Mutex qmu;
  common::CondVar qcv;
  std::deque<Ticket> queue;
  int busy = 0;
  bool closed = false;

  auto worker = [&](int w) {
    Rng rng(common::Mix(options_.seed * 1000003 + w));
    while (true) {
      Ticket t;
      {
        common::MutexLock lock(&qmu);
        while (queue.empty() && !closed) qcv.Wait(&qmu);
        if (queue.empty()) return;
        t = queue.front();
        queue.pop_front();
        ++busy;
      }
      Execute(NextQuery(rng, t.seq), t.intended, t.measured, rng);
      common::MutexLock lock(&qmu);
      --busy;
    }
  };
  std::vector<std::thread> threads;
  for (int w = 0; w < std::max(options_.max_outstanding, 1); ++w) {
    threads.emplace_back(worker, w);
  }

  Rng rng(common::Mix(options_.seed ^ 0xA11CE));
  const PoissonArrivals arrivals(options_.qps);
  const absl::Time end = measure_start_ + options_.duration;
  int64_t measured_issued = 0;
  int64_t seq = 0;
  absl::Time next = start_;
  while (true) {
    next += absl::Seconds(arrivals.NextGapSeconds(rng));
    const bool measured = next >= measure_start_;
    if (measured) {
      if (options_.queries > 0 ? measured_issued >= options_.queries
                               : next >= end) {
        break;
      }
      ++measured_issued;
    }
    // Sleep to the intended time; when behind schedule, issue at once (the
    // latency still counts from `next`).
    const absl::Duration wait = next - absl::Now();
    if (wait > absl::Microseconds(50)) absl::SleepFor(wait);
    common::MutexLock lock(&qmu);
    if (static_cast<int>(queue.size()) + busy >= options_.max_outstanding) {
      recorder_.RecordDropped(measured);
      continue;
    }
    queue.push_back({next, measured, seq++});
    qcv.Signal();
  }
  {
    common::MutexLock lock(&qmu);
    closed = true;
    qcv.SignalAll();
  }
  for (auto& t : threads) t.join();
}

void LoadDriver::ProgressLoop() {
  absl::Time tick = absl::Now();
  while (true) {
    tick += absl::Seconds(1);
    {
      common::MutexLock lock(&mu_);
      if (mu_.AwaitWithDeadline(absl::Condition(&done_), tick)) return;
    }
    const RunRecorder::Interval in = recorder_.TakeInterval();
    const absl::Time now = absl::Now();
    int64_t inflight;
    {
      common::MutexLock lock(&mu_);
      inflight = inflight_;
    }
    *options_.progress << absl::StrFormat(
        "loadgen: %6.1fs %-7s %8d qps  p99 %8.3f ms  errors %d  dropped %d  "
        "inflight %d\n",
        absl::ToDoubleSeconds(now - start_),
        now < measure_start_ ? "warm-up" : "measure", in.completed,
        in.p99_ns / 1e6, in.errors, in.dropped, inflight);
    options_.progress->flush();
  }
}

DriverResult LoadDriver::Run() {
  start_ = absl::Now();
  measure_start_ = start_ + options_.warmup;
  {
    common::MutexLock lock(&mu_);
    last_completion_ = measure_start_;
  }
  std::thread progress;
  if (options_.progress != nullptr)
    progress = std::thread([this] { ProgressLoop(); });
  if (options_.qps > 0) {
    RunOpen();
  } else {
    RunClosed();
  }
  DriverResult result;
  {
    common::MutexLock lock(&mu_);
    done_ = true;
    result.measured = last_completion_ - measure_start_;
  }
  if (progress.joinable()) progress.join();
  result.totals = recorder_.Totals();
  return result;
}

}  // namespace duet::loadgen
