//! Fakes of Google's APIs (token, Cloud Run, Monitoring, Logging) and a simulated
//! service, for tests and `rearguard demo` (the Google issue).
