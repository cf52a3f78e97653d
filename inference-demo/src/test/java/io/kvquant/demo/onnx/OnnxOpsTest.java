package io.kvquant.demo.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class OnnxOpsTest {

    // Hand-written protobuf: ModelProto.graph(7) → GraphProto.node(1) → NodeProto.op_type(4), domain(7),
    // attribute(5) → AttributeProto.g(6).
    static byte[] field(int number, byte[] payload) {
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        varint(b, (number << 3) | 2);
        varint(b, payload.length);
        b.writeBytes(payload);
        return b.toByteArray();
    }

    static void varint(ByteArrayOutputStream b, long v) {
        while ((v & ~0x7fL) != 0) {
            b.write((int) ((v & 0x7f) | 0x80));
            v >>>= 7;
        }
        b.write((int) v);
    }

    static byte[] cat(byte[]... parts) {
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        for (byte[] p : parts) {
            b.writeBytes(p);
        }
        return b.toByteArray();
    }

    static byte[] str(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static byte[] node(String op, String domain, byte[]... attributes) {
        byte[] n = cat(field(1, str("x")), field(4, str(op)));
        if (domain != null) {
            n = cat(n, field(7, str(domain)));
        }
        for (byte[] a : attributes) {
            n = cat(n, field(5, a));
        }
        return field(1, n);
    }

    static byte[] varintField(int number, long v) {
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        varint(b, number << 3);
        varint(b, v);
        return b.toByteArray();
    }

    @Test
    void findsOpsInSubgraphsAndRefusesFusedAttention(@TempDir Path tmp) throws IOException {
        byte[] inner = cat(node("GroupQueryAttention", "com.microsoft"), node("Add", ""));
        byte[] attr = cat(field(1, str("then_branch")), field(6, inner));
        byte[] graph = cat(node("MatMul", null), node("If", null, attr), field(5, new byte[300])); // + an "initializer"
        byte[] model = cat(varintField(1, 8), field(2, str("test")), field(7, graph));
        Path f = tmp.resolve("model.onnx");
        Files.write(f, model);
        Set<String> ops = OnnxOps.opTypes(f);
        assertEquals(Set.of("MatMul", "If", "com.microsoft::GroupQueryAttention", "Add"), ops);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> DecoderModel.open(f, DecoderModel.Options.defaults()));
        assertTrue(e.getMessage().contains("fused attention operators [com.microsoft::GroupQueryAttention]"), e.getMessage());
        assertFalse(e.getMessage().contains("\n"), "one line: " + e.getMessage());
    }

    @Test
    void truncatedFileIsAnIoError(@TempDir Path tmp) throws IOException {
        byte[] model = field(7, cat(node("MatMul", null), node("Softmax", null)));
        Path f = tmp.resolve("model.onnx");
        Files.write(f, java.util.Arrays.copyOf(model, model.length - 5));
        IOException e = assertThrows(IOException.class, () -> OnnxOps.opTypes(f));
        assertTrue(e.getMessage().contains("not a readable ONNX model"), e.getMessage());
    }

    @Test
    void bundledModelUsesPlainAttentionOps() throws IOException {
        Set<String> ops = OnnxOps.opTypes(TestModel.dir().resolve("model.onnx"));
        assertTrue(ops.containsAll(Set.of("MatMul", "Softmax")), ops.toString());
        for (String op : ops) {
            assertFalse(OnnxOps.FUSED_ATTENTION.contains(op), "fused op " + op);
        }
    }
}
