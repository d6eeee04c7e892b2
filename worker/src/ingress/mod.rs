//! Ingresses: where outside records enter the application.

pub mod http;
