// TLS and mutual TLS for the gRPC links (duet-edge -> duet-cloud, app ->
// duet-edge, duet-loadgen -> either): builds grpc::ServerCredentials and
// grpc::ChannelCredentials from PEM files named by flags. Every option empty
// means plaintext (insecure credentials), as before TLS existed; callers log
// Describe*() so a plaintext port shows up as a WARNING line.
// Errors name the flag and the path: NOT_FOUND for a missing or unreadable
// file, INVALID_ARGUMENT for a file that holds no PEM certificate/key, a key
// that does not match its certificate, or half-configured TLS (a certificate
// without its key, client CA without a server certificate). Stateless.
#ifndef DUET_COMMON_RPC_TLS_H_
#define DUET_COMMON_RPC_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace duet::common {

// A listening port. cert_file + key_file: TLS. client_ca_file as well:
// mutual TLS (clients must present a certificate signed by that CA).
struct ServerTlsOptions {
  std::string cert_file;       // PEM certificate chain
  std::string key_file;        // PEM private key
  std::string client_ca_file;  // PEM CA bundle for client certificates
  // Flag names in errors: --<flag_prefix>_cert, _key, _client_ca.
  std::string flag_prefix = "tls";

  bool enabled() const {
    return !cert_file.empty() || !key_file.empty() || !client_ca_file.empty();
  }
};

// A channel. Any option set: TLS; ca_file empty then means gRPC's default
// roots. cert_file + key_file: the client certificate for mutual TLS.
// server_name: the name the server certificate must carry instead of the
// target's host (e.g. connecting by IP to a certificate for "localhost").
struct ClientTlsOptions {
  std::string ca_file;    // PEM CA bundle that signed the server certificate
  std::string cert_file;  // PEM client certificate chain
  std::string key_file;   // PEM client private key
  std::string server_name;
  // Flag names in errors: --<flag_prefix>_ca, _cert, _key, _server_name.
  std::string flag_prefix = "cloud_tls";

  bool enabled() const {
    return !ca_file.empty() || !cert_file.empty() || !key_file.empty() ||
           !server_name.empty();
  }
};

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsOptions& options);

// Also sets the target-name override on `args` when server_name is given.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const ClientTlsOptions& options,
                       grpc::ChannelArguments* args);

// One line for the start-up log, e.g. "mutual TLS (client certificates
// required, CA /etc/duet/ca.pem)" or "WARNING: plaintext ...".
std::string DescribeServerTls(const ServerTlsOptions& options);
std::string DescribeClientTls(const ClientTlsOptions& options);

}  // namespace duet::common

#endif  // DUET_COMMON_RPC_TLS_H_
