//! stub
#[derive(Debug)]
pub struct OnnxLmSummarizer;
#[derive(Debug)]
pub struct OnnxLmSummarizerBuilder;
