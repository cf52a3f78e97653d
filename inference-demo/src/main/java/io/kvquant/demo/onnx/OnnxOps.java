package io.kvquant.demo.onnx;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashSet;
import java.util.Set;

/**
 * Lists the operator types of an ONNX model by reading just enough of its protobuf
 * (ModelProto.graph → GraphProto.node → NodeProto.op_type/domain, recursing into subgraphs
 * of If/Loop nodes). Initializers are skipped without being decoded, so this is cheap even
 * for large files. Returns entries of the form {@code domain::OpType} ({@code OpType} for the
 * default domain).
 */
public final class OnnxOps {

    private OnnxOps() {
    }

    /** Fused attention operators whose cache semantics the round-trip hook does not follow. */
    public static final Set<String> FUSED_ATTENTION = Set.of(
            "com.microsoft::GroupQueryAttention", "com.microsoft::MultiHeadAttention", "com.microsoft::Attention",
            "com.microsoft::PackedAttention", "com.microsoft::PackedMultiHeadAttention",
            "com.microsoft::DecoderMaskedMultiHeadAttention", "com.microsoft::DecoderMaskedSelfAttention",
            "com.microsoft::SparseAttention", "com.microsoft::PagedAttention", "Attention");

    public static Set<String> opTypes(Path model) throws IOException {
        try (FileChannel ch = FileChannel.open(model, StandardOpenOption.READ); Arena arena = Arena.ofConfined()) {
            MemorySegment seg = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(), arena);
            Set<String> ops = new LinkedHashSet<>();
            Reader r = new Reader(seg, 0, seg.byteSize());
            while (r.more()) {
                int tag = r.tag();
                if (tag >>> 3 == 7 && (tag & 7) == 2) {
                    long len = r.varint();
                    graph(seg, r.pos, r.pos + len, ops, 0);
                    r.pos += len;
                } else {
                    r.skip(tag);
                }
            }
            return ops;
        } catch (IndexOutOfBoundsException | IllegalStateException e) {
            throw new IOException(model + " is not a readable ONNX model (" + e.getMessage() + ")", e);
        }
    }

    private static void graph(MemorySegment seg, long from, long to, Set<String> ops, int depth) {
        if (depth > 16) {
            throw new IllegalStateException("subgraphs nested deeper than 16");
        }
        Reader r = new Reader(seg, from, to);
        while (r.more()) {
            int tag = r.tag();
            if (tag >>> 3 == 1 && (tag & 7) == 2) {
                long len = r.varint();
                node(seg, r.pos, r.pos + len, ops, depth);
                r.pos += len;
            } else {
                r.skip(tag);
            }
        }
    }

    private static void node(MemorySegment seg, long from, long to, Set<String> ops, int depth) {
        Reader r = new Reader(seg, from, to);
        String op = "";
        String domain = "";
        while (r.more()) {
            int tag = r.tag();
            int field = tag >>> 3;
            if ((tag & 7) == 2 && (field == 4 || field == 7)) {
                long len = r.varint();
                byte[] b = seg.asSlice(r.pos, len).toArray(ValueLayout.JAVA_BYTE);
                r.pos += len;
                if (field == 4) {
                    op = new String(b, StandardCharsets.UTF_8);
                } else {
                    domain = new String(b, StandardCharsets.UTF_8);
                }
            } else if ((tag & 7) == 2 && field == 5) {
                long len = r.varint();
                attribute(seg, r.pos, r.pos + len, ops, depth);
                r.pos += len;
            } else {
                r.skip(tag);
            }
        }
        ops.add(domain.isEmpty() || domain.equals("ai.onnx") ? op : domain + "::" + op);
    }

    private static void attribute(MemorySegment seg, long from, long to, Set<String> ops, int depth) {
        Reader r = new Reader(seg, from, to);
        while (r.more()) {
            int tag = r.tag();
            int field = tag >>> 3;
            if ((tag & 7) == 2 && (field == 6 || field == 11)) { // g, graphs
                long len = r.varint();
                graph(seg, r.pos, r.pos + len, ops, depth + 1);
                r.pos += len;
            } else {
                r.skip(tag);
            }
        }
    }

    private static final class Reader {
        final MemorySegment seg;
        final long end;
        long pos;

        Reader(MemorySegment seg, long from, long to) {
            if (to > seg.byteSize() || from > to) {
                throw new IllegalStateException("truncated message");
            }
            this.seg = seg;
            this.pos = from;
            this.end = to;
        }

        boolean more() {
            return pos < end;
        }

        int tag() {
            return (int) varint();
        }

        long varint() {
            long v = 0;
            for (int shift = 0; shift < 64; shift += 7) {
                if (pos >= end) {
                    throw new IllegalStateException("truncated varint");
                }
                byte b = seg.get(ValueLayout.JAVA_BYTE, pos++);
                v |= (long) (b & 0x7f) << shift;
                if (b >= 0) {
                    return v;
                }
            }
            throw new IllegalStateException("bad varint");
        }

        void skip(int tag) {
            switch (tag & 7) {
                case 0 -> varint();
                case 1 -> pos += 8;
                case 2 -> {
                    long len = varint();
                    pos += len;
                }
                case 5 -> pos += 4;
                default -> throw new IllegalStateException("unsupported protobuf wire type " + (tag & 7));
            }
            if (pos > end) {
                throw new IllegalStateException("truncated field");
            }
        }
    }
}
