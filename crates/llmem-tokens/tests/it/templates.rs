//! Chat accounting: for template formats, the sum of per-message counts plus the request
//! overhead equals the count of the rendered prompt that a llama.cpp or vLLM server tokenises.

use llmem_core::{Message, TokenCounter};
use llmem_tokens::Counters;

use crate::locomo_turns;

fn conversation(n: usize) -> Vec<Message> {
    let turns = locomo_turns();
    let mut msgs = vec![Message::system(
        "You are a helpful assistant who remembers the user's life.",
    )];
    for (i, t) in turns.iter().take(n).enumerate() {
        msgs.push(if i % 2 == 0 {
            Message::user(t.clone())
        } else {
            Message::assistant(t.clone())
        });
    }
    msgs
}

#[test]
fn llama3_and_chatml_counts_equal_the_rendered_prompt() {
    let counters = Counters::embedded().unwrap();
    let msgs = conversation(200);
    for model in ["llama-3.1-8b", "qwen2.5-7b"] {
        let c = counters.for_model(model).unwrap();
        for k in [1, 2, 7, 50, msgs.len()] {
            let prompt = c.render_template(&msgs[..k]).unwrap();
            assert_eq!(
                c.count_messages(&msgs[..k]),
                c.count(&prompt),
                "{model} with {k} messages"
            );
        }
    }
}

#[test]
fn gemma_and_mistral_counts_are_within_a_token_per_message() {
    let counters = Counters::embedded().unwrap();
    let msgs = conversation(60);
    for model in ["gemma-3-27b", "mistral-nemo"] {
        let c = counters.for_model(model).unwrap();
        let prompt = c.render_template(&msgs).unwrap();
        let (ours, real) = (c.count_messages(&msgs) as i64, c.count(&prompt) as i64);
        assert!(
            (ours - real).abs() <= msgs.len() as i64,
            "{model}: {ours} vs {real}"
        );
    }
}

#[test]
fn unknown_models_fall_back_with_an_estimate_label() {
    let counters = Counters::embedded().unwrap();
    let c = counters.for_model("my-private-model-v3").unwrap();
    assert!(matches!(
        c.accuracy(),
        llmem_core::Accuracy::Estimate { .. }
    ));
    assert!(c.count("hello world") > 0);
}
