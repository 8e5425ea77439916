//! Running the real kubectl (the versioned `kubectl.1.32`, bypassing the SDK dispatcher) with a fresh
//! cache dir per command.
