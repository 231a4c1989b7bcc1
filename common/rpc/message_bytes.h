// Requests parsed by the handler, so bytes that do not parse get
// INVALID_ARGUMENT naming the message type.
//
// gRPC's generated handlers parse before the handler runs, and a message that
// does not parse is answered by gRPC 1.51 itself: UNIMPLEMENTED with no
// message (callback API, unary), INTERNAL with no message (sync API), or
// OnReadDone(false) on a stream — indistinguishable from the client's
// half-close, so the stream ended OK. duet-cloud therefore serves every method
// over raw bytes (the generated WithRawCallbackMethod_* classes) and parses
// here; duet-edge's sync handlers read their request from a
// grpc::ServerUnaryStreamer (ReadUnaryRequest). Responses are serialized with
// gRPC's own serializer, as the generated handlers would.
#ifndef DUET_COMMON_RPC_MESSAGE_BYTES_H_
#define DUET_COMMON_RPC_MESSAGE_BYTES_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/base/mutex.h"
#include "common/rpc/grpc_status.h"
#include "grpcpp/grpcpp.h"

namespace duet::common {

// The status a message that does not parse gets (`bytes` < 0: not known).
template <typename Message>
grpc::Status NotParsed(int64_t bytes = -1) {
  return grpc::Status(
      grpc::StatusCode::INVALID_ARGUMENT,
      absl::StrCat(bytes < 0 ? "the message"
                             : absl::StrCat("a message of ", bytes, " bytes"),
                   " does not parse as ", Message::descriptor()->full_name()));
}

// Parses `bytes` into `message`; INVALID_ARGUMENT naming the type if they do
// not parse. The bytes are shared, not copied.
template <typename Message>
grpc::Status ParseMessage(const grpc::ByteBuffer& bytes, Message* message) {
  grpc::ByteBuffer shared(bytes);
  if (grpc::SerializationTraits<Message>::Deserialize(&shared, message).ok()) {
    return grpc::Status::OK;
  }
  return NotParsed<Message>(static_cast<int64_t>(bytes.Length()));
}

// Serializes `message` into `out` (replacing what it held).
template <typename Message>
grpc::Status SerializeMessage(const Message& message, grpc::ByteBuffer* out) {
  out->Clear();  // gRPC's serializer asserts it writes into an empty buffer
  bool own_buffer = false;
  return grpc::SerializationTraits<Message>::Serialize(message, out,
                                                       &own_buffer);
}

// A unary callback call over raw bytes: parses the request on construction
// (finishing INVALID_ARGUMENT at once if it does not parse), owns the request
// and response until the call is done, and serializes the response when the
// handler replies OK. Deletes itself when gRPC is done with it.
template <typename Request, typename Response>
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  UnaryCall(const grpc::ByteBuffer* request_bytes, grpc::ByteBuffer* out)
      : out_(out) {
    parse_status_ = ParseMessage(*request_bytes, &request_);
    if (!parse_status_.ok()) Finish(parse_status_);
  }

  // False: the call is already finished with parse_status().
  bool parsed() const { return parse_status_.ok(); }
  // The handler's last use of the call, returning it to gRPC: gRPC runs
  // OnDone only after the handler returned, on another thread (TSan is told;
  // common/base/mutex.h).
  grpc::ServerUnaryReactor* HandOff() {
    tsan::Release(this);
    return this;
  }
  const grpc::Status& parse_status() const { return parse_status_; }
  const Request& request() const { return request_; }
  Response* response() { return &response_; }

  // Ends the call: with `status`, or when it is OK with the response.
  void Reply(const grpc::Status& status) {
    const grpc::Status end =
        status.ok() ? SerializeMessage(response_, out_) : status;
    tsan::Release(this);  // gRPC's thread runs OnDone (common/base/mutex.h)
    Finish(end);
  }

  // Ends the call with `result`: its value as the response, or its error.
  void ReplyWith(absl::StatusOr<Response> result) {
    if (result.ok()) response_.Swap(&*result);
    Reply(ToGrpcStatus(result.status()));
  }

  void OnDone() override {
    tsan::Acquire(this);
    delete this;
  }

 private:
  grpc::ByteBuffer* const out_;
  grpc::Status parse_status_;
  Request request_;
  Response response_;
};

// The request of a sync unary handler served as a streamed unary method
// (the generated WithStreamedUnaryMethod_*): INVALID_ARGUMENT naming the type
// when the client's message does not parse (or it sent none).
template <typename Request, typename Response>
grpc::Status ReadUnaryRequest(
    grpc::ServerUnaryStreamer<Request, Response>* stream, Request* request) {
  if (stream->Read(request)) return grpc::Status::OK;
  return NotParsed<Request>();
}

}  // namespace duet::common

#endif  // DUET_COMMON_RPC_MESSAGE_BYTES_H_
