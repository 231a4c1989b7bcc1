// The project's locks: absl::Mutex, absl::CondVar and absl::Notification
// behind thin wrappers that ThreadSanitizer can see.
//
// Debian's Abseil is not built with -fsanitize=thread, so TSan sees neither
// its locks nor the happens-before edges they create, and reports every
// hand-off of data between two threads through them as a race. In a TSan
// build these wrappers tell TSan what absl did (the __tsan_mutex_* and
// __tsan_acquire/__tsan_release annotations, which is what Abseil itself
// does when it is built with TSan); in any other build they compile to the
// absl calls. The wrappers carry the same lock annotations as absl, so
// clang's -Wthread-safety checks them as it checked absl::Mutex.
//
// A condition passed to Await or LockWhen may be evaluated by absl on
// another thread, inside that thread's Unlock: it must read only state the
// mutex guards (as absl requires anyway). TSan does not check the accesses
// made while evaluating it (they happen inside absl, under the lock).
#ifndef DUET_COMMON_BASE_MUTEX_H_
#define DUET_COMMON_BASE_MUTEX_H_

#include "absl/base/config.h"
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

#ifdef ABSL_HAVE_THREAD_SANITIZER
#include <sanitizer/tsan_interface.h>
#endif

namespace duet::common {

namespace tsan {
// Each is a no-op unless the build is a TSan build.
#ifdef ABSL_HAVE_THREAD_SANITIZER
inline void Create(void* m) { __tsan_mutex_create(m, 0); }
inline void Destroy(void* m) { __tsan_mutex_destroy(m, 0); }
inline void PreLock(void* m, unsigned f) { __tsan_mutex_pre_lock(m, f); }
inline void PostLock(void* m, unsigned f) { __tsan_mutex_post_lock(m, f, 0); }
inline void PreUnlock(void* m, unsigned f) { __tsan_mutex_pre_unlock(m, f); }
inline void PostUnlock(void* m, unsigned f) { __tsan_mutex_post_unlock(m, f); }
inline void Release(void* a) { __tsan_release(a); }
inline void Acquire(void* a) { __tsan_acquire(a); }
constexpr unsigned kRead = __tsan_mutex_read_lock;
constexpr unsigned kTry = __tsan_mutex_try_lock;
constexpr unsigned kTryFailed = __tsan_mutex_try_lock_failed;
#else
inline void Create(void*) {}
inline void Destroy(void*) {}
inline void PreLock(void*, unsigned) {}
inline void PostLock(void*, unsigned) {}
inline void PreUnlock(void*, unsigned) {}
inline void PostUnlock(void*, unsigned) {}
inline void Release(void*) {}
inline void Acquire(void*) {}
constexpr unsigned kRead = 0;
constexpr unsigned kTry = 0;
constexpr unsigned kTryFailed = 0;
#endif
}  // namespace tsan

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() { tsan::Create(this); }
  ~Mutex() { tsan::Destroy(this); }
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    tsan::PreLock(this, 0);
    mu_.Lock();
    tsan::PostLock(this, 0);
  }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    tsan::PreUnlock(this, 0);
    mu_.Unlock();
    tsan::PostUnlock(this, 0);
  }
  bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) {
    tsan::PreLock(this, tsan::kTry);
    const bool locked = mu_.TryLock();
    tsan::PostLock(this, tsan::kTry | (locked ? 0 : tsan::kTryFailed));
    return locked;
  }
  void ReaderLock() ABSL_SHARED_LOCK_FUNCTION() {
    tsan::PreLock(this, tsan::kRead);
    mu_.ReaderLock();
    tsan::PostLock(this, tsan::kRead);
  }
  void ReaderUnlock() ABSL_UNLOCK_FUNCTION() {
    tsan::PreUnlock(this, tsan::kRead);
    mu_.ReaderUnlock();
    tsan::PostUnlock(this, tsan::kRead);
  }
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() { mu_.AssertHeld(); }
  void AssertReaderHeld() const ABSL_ASSERT_SHARED_LOCK() {
    mu_.AssertReaderHeld();
  }

  // As absl::Mutex's: with the lock held, release it until `cond` holds.
  void Await(const absl::Condition& cond) ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    Released released(this);
    mu_.Await(cond);
  }
  bool AwaitWithTimeout(const absl::Condition& cond, absl::Duration timeout)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    Released released(this);
    return mu_.AwaitWithTimeout(cond, timeout);
  }
  bool AwaitWithDeadline(const absl::Condition& cond, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    Released released(this);
    return mu_.AwaitWithDeadline(cond, deadline);
  }

 private:
  friend class CondVar;

  // Tells TSan the lock is released for the lifetime of this object (a wait
  // inside absl, which re-acquires it before returning): the wait is an
  // unlock then a lock, so it orders this thread after whoever held the lock
  // meanwhile. The condition's evaluation inside the wait is not checked.
  class Released {
   public:
    explicit Released(Mutex* mu) : mu_(mu) { tsan::PreUnlock(mu_, 0); }
    ~Released() {
      tsan::PostUnlock(mu_, 0);
      tsan::PreLock(mu_, 0);
      tsan::PostLock(mu_, 0);
    }
    Released(const Released&) = delete;
    Released& operator=(const Released&) = delete;

   private:
    Mutex* const mu_;
  };

  absl::Mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
  }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class ABSL_SCOPED_LOCKABLE ReaderMutexLock {
 public:
  explicit ReaderMutexLock(Mutex* mu) ABSL_SHARED_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->ReaderLock();
  }
  ~ReaderMutexLock() ABSL_UNLOCK_FUNCTION() { mu_->ReaderUnlock(); }
  ReaderMutexLock(const ReaderMutexLock&) = delete;
  ReaderMutexLock& operator=(const ReaderMutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class CondVar {
 public:
  void Wait(Mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Mutex::Released released(mu);
    cv_.Wait(&mu->mu_);
  }
  void Signal() { cv_.Signal(); }
  void SignalAll() { cv_.SignalAll(); }

 private:
  absl::CondVar cv_;
};

// absl::Notification: Notify() happens-before every wait that sees it.
class Notification {
 public:
  Notification() = default;
  Notification(const Notification&) = delete;
  Notification& operator=(const Notification&) = delete;

  void Notify() {
    tsan::Release(this);
    n_.Notify();
  }
  bool HasBeenNotified() const { return Seen(n_.HasBeenNotified()); }
  void WaitForNotification() const {
    n_.WaitForNotification();
    Seen(true);
  }
  bool WaitForNotificationWithTimeout(absl::Duration timeout) const {
    return Seen(n_.WaitForNotificationWithTimeout(timeout));
  }
  bool WaitForNotificationWithDeadline(absl::Time deadline) const {
    return Seen(n_.WaitForNotificationWithDeadline(deadline));
  }

 private:
  bool Seen(bool notified) const {
    if (notified) tsan::Acquire(const_cast<Notification*>(this));
    return notified;
  }

  absl::Notification n_;
};

}  // namespace duet::common

#endif  // DUET_COMMON_BASE_MUTEX_H_
