//! The one ONNX graph llmem builds itself: `scores = MatMul(query, matrix_t)`, with the
//! working set as a constant (an initializer) so that ONNX Runtime places it on the device
//! once, when the session is created. Written as protobuf by hand (a few fields of
//! `onnx.proto`), to avoid a protobuf code generator for one message.

/// Protobuf wire types.
const VARINT: u64 = 0;
const LEN: u64 = 2;

/// `TensorProto.DataType.FLOAT`.
const FLOAT: u64 = 1;

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn int(buf: &mut Vec<u8>, field: u64, v: u64) {
    varint(buf, field << 3 | VARINT);
    varint(buf, v);
}

fn bytes(buf: &mut Vec<u8>, field: u64, data: &[u8]) {
    varint(buf, field << 3 | LEN);
    varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

/// One dimension of a shape: a size, or a symbolic name.
enum Dim<'a> {
    Fixed(usize),
    Named(&'a str),
}

/// A `ValueInfoProto` for a float tensor of `shape`.
fn value_info(name: &str, shape: &[Dim<'_>]) -> Vec<u8> {
    let mut dims = Vec::new();
    for d in shape {
        let mut dim = Vec::new();
        match d {
            Dim::Fixed(n) => int(&mut dim, 1, *n as u64),
            Dim::Named(s) => bytes(&mut dim, 2, s.as_bytes()),
        }
        bytes(&mut dims, 1, &dim); // TensorShapeProto.dim
    }
    let mut tensor = Vec::new();
    int(&mut tensor, 1, FLOAT); // TypeProto.Tensor.elem_type
    bytes(&mut tensor, 2, &dims); // TypeProto.Tensor.shape
    let mut ty = Vec::new();
    bytes(&mut ty, 1, &tensor); // TypeProto.tensor_type
    let mut v = Vec::new();
    bytes(&mut v, 1, name.as_bytes()); // ValueInfoProto.name
    bytes(&mut v, 2, &ty); // ValueInfoProto.type
    v
}

/// The serialized model scoring a `[batch, dim]` input `query` against `rows` (`n` rows of
/// `dim` values, row-major) into a `[batch, n]` output `scores` of dot products.
pub(crate) fn scoring_model(rows: &[f32], n: usize, dim: usize) -> Vec<u8> {
    // The matrix transposed to [dim, n], so that a plain MatMul gives query · rowᵀ.
    let mut raw = Vec::with_capacity(rows.len() * 4);
    for c in 0..dim {
        for r in 0..n {
            raw.extend_from_slice(&rows[r * dim + c].to_le_bytes());
        }
    }
    let mut init = Vec::new();
    int(&mut init, 1, dim as u64); // TensorProto.dims
    int(&mut init, 1, n as u64);
    int(&mut init, 2, FLOAT); // TensorProto.data_type
    bytes(&mut init, 8, b"matrix_t"); // TensorProto.name
    bytes(&mut init, 9, &raw); // TensorProto.raw_data

    let mut node = Vec::new();
    bytes(&mut node, 1, b"query"); // NodeProto.input
    bytes(&mut node, 1, b"matrix_t");
    bytes(&mut node, 2, b"scores"); // NodeProto.output
    bytes(&mut node, 3, b"score"); // NodeProto.name
    bytes(&mut node, 4, b"MatMul"); // NodeProto.op_type

    let mut graph = Vec::new();
    bytes(&mut graph, 1, &node); // GraphProto.node
    bytes(&mut graph, 2, b"llmem_hot_scores"); // GraphProto.name
    bytes(&mut graph, 5, &init); // GraphProto.initializer
    let q = value_info("query", &[Dim::Named("batch"), Dim::Fixed(dim)]);
    bytes(&mut graph, 11, &q); // GraphProto.input
    let out = value_info("scores", &[Dim::Named("batch"), Dim::Fixed(n)]);
    bytes(&mut graph, 12, &out); // GraphProto.output

    let mut opset = Vec::new();
    bytes(&mut opset, 1, b""); // OperatorSetIdProto.domain (the default one)
    int(&mut opset, 2, 13); // OperatorSetIdProto.version

    let mut model = Vec::new();
    int(&mut model, 1, 8); // ModelProto.ir_version
    bytes(&mut model, 2, b"llmem"); // ModelProto.producer_name
    bytes(&mut model, 7, &graph); // ModelProto.graph
    bytes(&mut model, 8, &opset); // ModelProto.opset_import
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_follow_the_protobuf_encoding() {
        let enc = |v| {
            let mut b = Vec::new();
            varint(&mut b, v);
            b
        };
        assert_eq!(enc(1), [1]);
        assert_eq!(enc(127), [127]);
        assert_eq!(enc(300), [0xAC, 0x02]);
        assert_eq!(enc(u64::MAX).len(), 10);
    }
}
