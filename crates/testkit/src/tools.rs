//! Running the real command-line tools the tests compare against: kubectl, openssl, cfssl.
