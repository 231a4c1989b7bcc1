#include "common/rpc/tls.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace duet::common {
namespace {

std::string Flag(const std::string& prefix, const char* name) {
  return absl::StrCat("--", prefix, "_", name);
}

absl::StatusOr<std::string> ReadPem(const std::string& flag,
                                    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(flag, ": cannot read ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::NotFoundError(
        absl::StrCat(flag, ": cannot read ", path, ": ", std::strerror(errno)));
  }
  return text.str();
}

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioDeleter>;
using Cert = std::unique_ptr<X509, X509Deleter>;
using Key = std::unique_ptr<EVP_PKEY, KeyDeleter>;

Bio MemBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The first certificate of a PEM file (a chain or a CA bundle).
absl::StatusOr<Cert> ParseCert(const std::string& flag, const std::string& path,
                               const std::string& pem) {
  Bio bio = MemBio(pem);
  Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": ", path,
        " holds no PEM certificate (expected a -----BEGIN CERTIFICATE----- "
        "block)"));
  }
  return cert;
}

absl::StatusOr<Key> ParseKey(const std::string& flag, const std::string& path,
                             const std::string& pem) {
  Bio bio = MemBio(pem);
  Key key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": ", path,
        " holds no unencrypted PEM private key (expected a -----BEGIN "
        "PRIVATE KEY----- block)"));
  }
  return key;
}

// Reads a certificate and its key, checked to belong together.
absl::Status ReadKeyPair(const std::string& prefix,
                         const std::string& cert_file,
                         const std::string& key_file, std::string* cert_pem,
                         std::string* key_pem) {
  const std::string cert_flag = Flag(prefix, "cert");
  const std::string key_flag = Flag(prefix, "key");
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError(
        cert_file.empty()
            ? absl::StrCat(key_flag, " is set but ", cert_flag,
                           " is not; give both (the certificate and its key)")
            : absl::StrCat(cert_flag, " is set but ", key_flag,
                           " is not; give both (the certificate and its key)"));
  }
  ASSIGN_OR_RETURN(*cert_pem, ReadPem(cert_flag, cert_file));
  ASSIGN_OR_RETURN(*key_pem, ReadPem(key_flag, key_file));
  ASSIGN_OR_RETURN(Cert cert, ParseCert(cert_flag, cert_file, *cert_pem));
  ASSIGN_OR_RETURN(Key key, ParseKey(key_flag, key_file, *key_pem));
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_flag, " ", key_file, " is not the private key of ",
                     cert_flag, " ", cert_file));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadCa(const std::string& flag,
                                   const std::string& path) {
  ASSIGN_OR_RETURN(std::string pem, ReadPem(flag, path));
  RETURN_IF_ERROR(ParseCert(flag, path, pem).status());
  return pem;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsOptions& o) {
  if (!o.enabled()) return grpc::InsecureServerCredentials();
  if (o.cert_file.empty() && o.key_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        Flag(o.flag_prefix, "client_ca"), " needs ",
        Flag(o.flag_prefix, "cert"), " and ", Flag(o.flag_prefix, "key"),
        " (the server's own certificate and key)"));
  }
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  RETURN_IF_ERROR(ReadKeyPair(o.flag_prefix, o.cert_file, o.key_file,
                              &pair.cert_chain, &pair.private_key));
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!o.client_ca_file.empty()) {
    ASSIGN_OR_RETURN(
        ssl.pem_root_certs,
        ReadCa(Flag(o.flag_prefix, "client_ca"), o.client_ca_file));
    ssl.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  } else {
    ssl.client_certificate_request = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
  }
  return grpc::SslServerCredentials(ssl);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const ClientTlsOptions& o,
                       grpc::ChannelArguments* args) {
  if (!o.enabled()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  if (!o.cert_file.empty() || !o.key_file.empty()) {
    RETURN_IF_ERROR(ReadKeyPair(o.flag_prefix, o.cert_file, o.key_file,
                                &ssl.pem_cert_chain, &ssl.pem_private_key));
  }
  if (!o.ca_file.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_root_certs,
                     ReadCa(Flag(o.flag_prefix, "ca"), o.ca_file));
  }
  if (!o.server_name.empty() && args != nullptr) {
    args->SetSslTargetNameOverride(o.server_name);
  }
  return grpc::SslCredentials(ssl);
}

std::string DescribeServerTls(const ServerTlsOptions& o) {
  if (!o.enabled()) {
    return absl::StrCat("WARNING: plaintext (no ", Flag(o.flag_prefix, "cert"),
                        "): traffic is neither encrypted nor authenticated");
  }
  if (o.client_ca_file.empty()) {
    return absl::StrCat("TLS (certificate ", o.cert_file,
                        "; client certificates not requested)");
  }
  return absl::StrCat("mutual TLS (certificate ", o.cert_file,
                      "; client certificates required, signed by ",
                      o.client_ca_file, ")");
}

std::string DescribeClientTls(const ClientTlsOptions& o) {
  if (!o.enabled()) {
    return absl::StrCat("WARNING: plaintext (no ", Flag(o.flag_prefix, "ca"),
                        "): traffic is neither encrypted nor authenticated");
  }
  return absl::StrCat(
      o.cert_file.empty() ? "TLS" : "mutual TLS", " (server verified against ",
      o.ca_file.empty() ? "gRPC's default roots" : o.ca_file,
      o.server_name.empty() ? "" : absl::StrCat(" as ", o.server_name),
      o.cert_file.empty() ? ""
                          : absl::StrCat("; client certificate ", o.cert_file),
      ")");
}

}  // namespace duet::common
