#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_integration_tests::fuzz::ingest(data));
