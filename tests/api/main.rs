//! The custom resources: wire compatibility and schema validation.
