// duet-link-emulator: a userspace stand-in for `tc qdisc ... netem` (the
// test machine's kernel has no sch_netem) for tests/netfault_test.cc. It
// creates one TUN device inside each of two network namespaces and forwards
// IP packets between them through two LinkDirections (a -> b is "up", b -> a
// "down"): delay, jitter, random loss, a rate limit and partitions. One
// thread, epoll on both TUNs, a timerfd for the next departure and a UNIX
// control socket taking one line per connection:
//   set up|down|both [delay_ms=D] [jitter_ms=J] [loss_pct=P] [rate_mbit=R]
//       (unnamed keys become 0; a partition is kept)
//   partition | heal | stats
// and answering one line ("ok ..." or "error: ...").
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/cli/flags.h"
#include "tests/netem/link_direction.h"

ABSL_FLAG(std::string, a, "",
          "NAMESPACE:IFNAME of side a (the TUN device to create there); "
          "required.");
ABSL_FLAG(std::string, b, "", "NAMESPACE:IFNAME of side b; required.");
ABSL_FLAG(std::string, control, "",
          "Path of the UNIX control socket to create; required.");
ABSL_FLAG(int, queue_packets, 1000,
          "Packets queued per direction before tail drop (netem's limit).");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the loss and jitter draws.");

namespace {

using duet::netem::LinkDirection;
using duet::netem::LinkParams;

// Larger than any packet of a TUN with the default 1500-byte MTU.
constexpr size_t kMaxPacket = 2048;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "duet-link-emulator: %s: %s\n", what.c_str(),
               std::strerror(errno));
  std::exit(1);
}

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// Creates TUN `spec` = "NS:IF" inside /run/netns/NS; the fd keeps working in
// whatever namespace this process is in afterwards.
int OpenTunIn(const std::string& spec) {
  const std::vector<std::string> parts = absl::StrSplit(spec, ':');
  if (parts.size() != 2 || parts[0].empty() || parts[1].empty() ||
      parts[1].size() >= IFNAMSIZ) {
    duet::common::ExitWithUsageError(
        absl::StrCat("'", spec, "' is not NAMESPACE:IFNAME"));
  }
  const int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  const int ns = open(("/run/netns/" + parts[0]).c_str(), O_RDONLY | O_CLOEXEC);
  if (self < 0 || ns < 0) Die("open namespace " + parts[0]);
  if (setns(ns, CLONE_NEWNET) != 0) Die("setns " + parts[0]);
  const int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) Die("open /dev/net/tun");
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", parts[1].c_str());
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) Die("TUNSETIFF " + spec);
  if (setns(self, CLONE_NEWNET) != 0) Die("setns back");
  close(ns);
  close(self);
  return fd;
}

struct Side {
  int tun = -1;
  LinkDirection* out = nullptr;  // what this side sends
};

// Reads every packet waiting on `from`'s TUN into its outgoing direction.
void ReadPackets(const Side& from) {
  std::array<uint8_t, kMaxPacket> discard;
  for (;;) {
    uint8_t* slot = from.out->Slot();
    const ssize_t n =
        read(from.tun, slot != nullptr ? slot : discard.data(), kMaxPacket);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      Die("read tun");
    }
    if (slot == nullptr) {
      from.out->Overflow();
    } else {
      from.out->Arrive(NowNs(), static_cast<size_t>(n));
    }
  }
}

// Writes every packet of `dir` due by now to `tun` (a write the interface
// refuses, e.g. while it is down, is lost like on a wire).
void Deliver(LinkDirection& dir, int tun) {
  const int64_t now = NowNs();
  while (!dir.empty() && dir.NextDeparture() <= now) {
    (void)!write(tun, dir.FrontData(), dir.FrontBytes());
    dir.Pop();
  }
}

std::string Stats(const char* name, const LinkDirection& d) {
  const auto& s = d.stats();
  return absl::StrFormat(
      "%s delivered=%u bytes=%u lost=%u overflowed=%u partitioned=%u", name,
      s.delivered, s.delivered_bytes, s.lost, s.overflowed, s.partitioned);
}

// Applies one control line; the answer line.
std::string Command(absl::string_view line, LinkDirection& up,
                    LinkDirection& down) {
  line = absl::StripAsciiWhitespace(line);
  std::vector<absl::string_view> words =
      absl::StrSplit(line, ' ', absl::SkipEmpty());
  if (words.empty()) return "error: empty command";
  auto set_partition = [&](bool cut) {
    for (LinkDirection* d : {&up, &down}) {
      LinkParams p = d->params();
      p.partitioned = cut;
      d->SetParams(p);
    }
  };
  if (words[0] == "partition" && words.size() == 1) {
    set_partition(true);
    return "ok partitioned";
  }
  if (words[0] == "heal" && words.size() == 1) {
    set_partition(false);
    return "ok healed";
  }
  if (words[0] == "stats" && words.size() == 1) {
    return absl::StrCat("ok ", Stats("up", up), "; ", Stats("down", down));
  }
  if (words[0] != "set" || words.size() < 2) {
    return absl::StrCat("error: unknown command '", line, "'");
  }
  std::vector<LinkDirection*> dirs;
  if (words[1] == "up" || words[1] == "both") dirs.push_back(&up);
  if (words[1] == "down" || words[1] == "both") dirs.push_back(&down);
  if (dirs.empty()) return "error: direction must be up, down or both";
  LinkParams p;
  for (size_t i = 2; i < words.size(); ++i) {
    const std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(words[i], absl::MaxSplits('=', 1));
    double v = 0;
    if (!absl::SimpleAtod(kv.second, &v) || v < 0) {
      return absl::StrCat("error: bad value in '", words[i], "'");
    }
    if (kv.first == "delay_ms") {
      p.delay_ns = static_cast<int64_t>(v * 1e6);
    } else if (kv.first == "jitter_ms") {
      p.jitter_ns = static_cast<int64_t>(v * 1e6);
    } else if (kv.first == "loss_pct" && v <= 100) {
      p.loss = v / 100;
    } else if (kv.first == "rate_mbit") {
      p.rate_bps = v * 1e6;
    } else {
      return absl::StrCat("error: unknown or out-of-range key '", words[i],
                          "'");
    }
  }
  for (LinkDirection* d : dirs) {
    p.partitioned = d->params().partitioned;
    d->SetParams(p);
  }
  return absl::StrCat("ok ", line);
}

// One control connection: a line in, a line out. The client (the test)
// writes its line right after connecting; a 1 s receive timeout bounds how
// long forwarding can stall on a client that does not.
void ServeControl(int listener, LinkDirection& up, LinkDirection& down) {
  const int c = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (c < 0) return;
  timeval tv{1, 0};
  setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string line;
  char buf[512];
  while (line.find('\n') == std::string::npos && line.size() < 4096) {
    const ssize_t n = read(c, buf, sizeof(buf));
    if (n <= 0) break;
    line.append(buf, static_cast<size_t>(n));
  }
  const std::string answer = Command(line, up, down) + "\n";
  (void)!write(c, answer.data(), answer.size());
  close(c);
  std::fprintf(stderr, "duet-link-emulator: %s", answer.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  duet::common::ParseFlagsOrExit(
      argc, argv,
      "Test-only userspace link emulator (the kernel here has no sch_netem): "
      "one TUN device in each of two network namespaces, IP packets "
      "forwarded between them with delay, jitter, loss, a rate limit and "
      "partitions, set through a UNIX control socket.\n"
      "Usage: duet-link-emulator --a NS:IF --b NS:IF --control PATH\n"
      "Runs until SIGTERM/SIGINT or its parent exits; needs root.",
      __FILE__);
  const std::string control = absl::GetFlag(FLAGS_control);
  if (absl::GetFlag(FLAGS_a).empty() || absl::GetFlag(FLAGS_b).empty() ||
      control.empty()) {
    duet::common::ExitWithUsageError("--a, --b and --control are required");
  }
  if (absl::GetFlag(FLAGS_queue_packets) < 1) {
    duet::common::ExitWithUsageError("--queue_packets must be >= 1");
  }
  // Never outlive the test that started us (its TUN devices go with us).
  prctl(PR_SET_PDEATHSIG, SIGTERM);

  const size_t queue = static_cast<size_t>(absl::GetFlag(FLAGS_queue_packets));
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  LinkDirection up(queue, kMaxPacket, seed);
  LinkDirection down(queue, kMaxPacket, seed * 7919 + 1);
  const Side a{OpenTunIn(absl::GetFlag(FLAGS_a)), &up};
  const Side b{OpenTunIn(absl::GetFlag(FLAGS_b)), &down};

  const int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (control.size() >= sizeof(addr.sun_path)) {
    duet::common::ExitWithUsageError("--control path is too long");
  }
  std::memcpy(addr.sun_path, control.data(), control.size());
  unlink(control.c_str());
  if (listener < 0 ||
      bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listener, 8) != 0) {
    Die("control socket " + control);
  }

  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigprocmask(SIG_BLOCK, &stop, nullptr);
  const int sfd = signalfd(-1, &stop, SFD_CLOEXEC);
  const int timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  if (sfd < 0 || timer < 0 || ep < 0) Die("signalfd/timerfd/epoll");
  for (int fd : {a.tun, b.tun, listener, timer, sfd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) Die("epoll_ctl");
  }
  std::fprintf(stderr, "duet-link-emulator: ready, control on %s\n",
               control.c_str());

  for (;;) {
    // Wake for the earliest departure of either direction.
    int64_t next = -1;
    for (const LinkDirection* d : {&up, &down}) {
      if (!d->empty() && (next < 0 || d->NextDeparture() < next)) {
        next = d->NextDeparture();
      }
    }
    itimerspec its{};
    if (next >= 0) {
      next = std::max<int64_t>(next, 1);
      its.it_value.tv_sec = next / 1'000'000'000;
      its.it_value.tv_nsec = next % 1'000'000'000;
    }
    timerfd_settime(timer, TFD_TIMER_ABSTIME, &its, nullptr);

    std::array<epoll_event, 8> events;
    const int n = epoll_wait(ep, events.data(), events.size(), -1);
    if (n < 0 && errno != EINTR) Die("epoll_wait");
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == a.tun) {
        ReadPackets(a);
      } else if (fd == b.tun) {
        ReadPackets(b);
      } else if (fd == listener) {
        ServeControl(listener, up, down);
      } else if (fd == timer) {
        uint64_t expirations;
        (void)!read(timer, &expirations, sizeof(expirations));
      } else if (fd == sfd) {
        unlink(control.c_str());
        std::fprintf(stderr, "duet-link-emulator: stopped\n");
        return 0;
      }
    }
    Deliver(up, b.tun);
    Deliver(down, a.tun);
  }
}
