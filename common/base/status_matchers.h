// gmock matchers for absl::Status / StatusOr, for every test (header-only;
// the test links gmock).
#ifndef DUET_COMMON_BASE_STATUS_MATCHERS_H_
#define DUET_COMMON_BASE_STATUS_MATCHERS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace duet::common {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

// EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
//                         HasSubstr("top_k")));
MATCHER_P2(StatusIs, code, message_matcher,
           "has status code " + absl::StatusCodeToString(code)) {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code &&
         testing::ExplainMatchResult(message_matcher, std::string(s.message()),
                                     result_listener);
}

}  // namespace duet::common

#endif  // DUET_COMMON_BASE_STATUS_MATCHERS_H_
