package io.kvquant.demo.onnx;

import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxTensorLike;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import io.kvquant.demo.graph.OnnxModel;
import io.kvquant.demo.graph.Pb;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The engine pieces' weights, held once by kvquant and handed to every ONNX Runtime session that
 * runs a piece: the general session (prompt) and the one-token session (decode step) of a piece
 * get the very same {@link OnnxTensor}s through
 * {@link OrtSession.SessionOptions#addExternalInitializers}, so ONNX Runtime reads no weight from
 * the files itself and holds none twice. Each initializer whose data lies in an external file
 * (every one of {@value #MIN_BYTES} bytes or more, as the preparation writes them) is
 * memory-mapped read-only from that file (file-backed pages: shared with the page cache, not
 * counted against the JVM's direct-memory limit) and wrapped without a copy when it starts at a
 * 64-byte aligned offset, else read once into 64-byte aligned native memory (ONNX Runtime's
 * kernels may expect aligned data; a protobuf's raw_data lies anywhere); one tensor per distinct
 * (file, offset, length), so a weight two pieces read (tied embeddings) is one tensor too.
 *
 * <p>ONNX Runtime's prepacking of MatMul weights makes a per-session copy of each weight in its
 * own layout; with shared weights that copy would be made once per session on top of the shared
 * original (measured: three times the weights), so the sessions that use these tensors run with
 * prepacking off unless {@code kvq.engine.prepack=on}. That holds the weights once, but MatMul
 * on unpacked weights is slower, for a prompt chunk and for a decode step alike (docs/engine.md,
 * "One-token decode pieces"): hence opt-in ({@code -Dkvq.engine.decodePieces=shared}). ONNX
 * Runtime's shared prepacked-weights container, which would keep one packed copy for both
 * sessions, is in its C API only.
 *
 * <p>The tensors must outlive every session given them: {@link #close} after the sessions.
 */
final class SharedWeights implements AutoCloseable {

    /** Initializers with external data below this size are left to ONNX Runtime (none are, as prepared). */
    static final int MIN_BYTES = 1;

    private final Arena arena = Arena.ofShared();
    /** One tensor per (file, offset, length). */
    private final Map<String, Region> byRegion = new LinkedHashMap<>();

    /** A distinct weight region: its tensor for ONNX Runtime and the memory behind it for the Java decode step. */
    private record Region(OnnxTensor tensor, MemorySegment seg) {
    }
    /** Per piece: initializer name to the shared tensor. */
    final List<Map<String, OnnxTensorLike>> pieces = new ArrayList<>();
    /** Per piece: initializer name to the memory behind its tensor (read by the Java decode step, {@link JavaPieces}). */
    final List<Map<String, MemorySegment>> segments = new ArrayList<>();
    /** Bytes of distinct weight regions held, and how many of them were read into memory (not 64-byte aligned in their file). */
    long bytes;
    int copied;
    /** How many piece initializers refer to a shared tensor (a tensor read by two pieces counts twice). */
    int references;

    private SharedWeights() {
    }

    /** How many distinct tensors are held. */
    int tensors() {
        return byRegion.size();
    }

    /**
     * Maps the external weights of {@code models} (pieces as {@link OnnxModel#read} gives them:
     * external locations absolute). Throws on anything it cannot hold (unknown element type, a
     * length that does not match the dims, a file it cannot map); nothing is left open then.
     */
    static SharedWeights load(List<OnnxModel> models) throws IOException, OrtException {
        SharedWeights w = new SharedWeights();
        Map<Path, FileChannel> files = new HashMap<>();
        try {
            for (OnnxModel m : models) {
                Map<String, OnnxTensorLike> mine = new LinkedHashMap<>();
                Map<String, MemorySegment> segs = new LinkedHashMap<>();
                for (Map.Entry<String, byte[]> e : m.initializers.entrySet()) {
                    Pb t = Pb.parse(e.getValue());
                    if (t.varint(14, 0) != 1) {
                        continue; // inline data: small, ONNX Runtime reads it from the piece itself
                    }
                    mine.put(e.getKey(), w.tensor(e.getKey(), t, files, segs));
                    w.references++;
                }
                w.pieces.add(mine);
                w.segments.add(segs);
            }
            return w;
        } catch (IOException | OrtException | RuntimeException ex) {
            w.close();
            throw ex;
        } finally {
            for (FileChannel ch : files.values()) {
                try {
                    ch.close(); // the mappings stay valid after their channel closes
                } catch (IOException ex) {
                    // closing: nothing to recover
                }
            }
        }
    }

    private OnnxTensor tensor(String name, Pb t, Map<Path, FileChannel> files, Map<String, MemorySegment> segs)
            throws IOException, OrtException {
        OnnxModel.ExternalData x = OnnxModel.ExternalData.of(t);
        String loc = x.location();
        long off = x.offset();
        long len = x.length();
        if (loc == null || !Path.of(loc).isAbsolute()) {
            throw new IllegalArgumentException("initializer " + name + ": external data without an absolute location");
        }
        int elemType = (int) t.varint(2, 0);
        OnnxJavaType type = javaType(elemType);
        if (type == null) {
            throw new IllegalArgumentException("initializer " + name + " has ONNX element type " + elemType
                    + ", which ONNX Runtime's Java API cannot wrap");
        }
        List<Pb.Field> d = t.all(1);
        long[] dims = new long[d.size()];
        long n = 1;
        for (int k = 0; k < dims.length; k++) {
            dims[k] = d.get(k).bits();
            n *= dims[k];
        }
        long size = n * type.size;
        if (len < 0) {
            len = size;
        }
        if (len != size) {
            throw new IllegalArgumentException("initializer " + name + ": " + len + " bytes of data for " + n + " elements of "
                    + type.size + " bytes");
        }
        if (len > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("initializer " + name + " is over 2 GB, more than one Java buffer holds");
        }
        String key = Path.of(loc).normalize() + "@" + off + "+" + len;
        Region have = byRegion.get(key);
        if (have != null) {
            if (have.tensor().getInfo().type != type || !java.util.Arrays.equals(have.tensor().getInfo().getShape(), dims)) {
                throw new IllegalArgumentException("initializer " + name + " reads the bytes of another initializer with "
                        + "another type or shape");
            }
            segs.put(name, have.seg());
            return have.tensor();
        }
        Path file = Path.of(loc);
        FileChannel ch = files.get(file);
        if (ch == null) {
            ch = FileChannel.open(file);
            files.put(file, ch);
        }
        if (off < 0 || off + len > ch.size()) {
            throw new IllegalArgumentException("initializer " + name + ": bytes [" + off + ", " + (off + len) + ") lie outside "
                    + file + " (" + ch.size() + " bytes)");
        }
        MemorySegment seg;
        if (off % ALIGN == 0) {
            seg = ch.map(FileChannel.MapMode.READ_ONLY, off, Math.max(len, 1), arena); // page-aligned + off
        } else {
            // data at an offset ONNX Runtime's kernels may not expect (a protobuf's raw_data lies
            // anywhere): read once into aligned native memory, the file left unmapped
            seg = allocate(Math.max(len, 1));
            java.nio.ByteBuffer b = seg.asByteBuffer();
            while (b.hasRemaining()) {
                if (ch.read(b, off + b.position()) < 0) {
                    throw new IllegalArgumentException("initializer " + name + ": " + file + " ended early");
                }
            }
            copied++;
        }
        OnnxTensor tensor = OnnxTensor.createTensor(DecoderModel.environment(),
                seg.asSlice(0, len).asByteBuffer().order(ByteOrder.nativeOrder()), dims, type);
        MemorySegment data = seg.asSlice(0, len);
        byRegion.put(key, new Region(tensor, data));
        segs.put(name, data);
        bytes += len;
        return tensor;
    }

    /** Alignment asked of data used in place (mapped) and given to data read into memory. */
    static final int ALIGN = 64;
    private static final java.lang.invoke.MethodHandle ALIGNED_ALLOC;
    private static final java.lang.invoke.MethodHandle FREE;

    static {
        java.lang.invoke.MethodHandle alloc = null;
        java.lang.invoke.MethodHandle free = null;
        try {
            if (SharedWeights.class.getModule().isNativeAccessEnabled()) {
                java.lang.foreign.Linker l = java.lang.foreign.Linker.nativeLinker();
                var a = l.defaultLookup().find("aligned_alloc");
                var f = l.defaultLookup().find("free");
                if (a.isPresent() && f.isPresent()) {
                    alloc = l.downcallHandle(a.get(), java.lang.foreign.FunctionDescriptor.of(java.lang.foreign.ValueLayout.ADDRESS,
                            java.lang.foreign.ValueLayout.JAVA_LONG, java.lang.foreign.ValueLayout.JAVA_LONG));
                    free = l.downcallHandle(f.get(), java.lang.foreign.FunctionDescriptor.ofVoid(
                            java.lang.foreign.ValueLayout.ADDRESS));
                }
            }
        } catch (RuntimeException e) {
            alloc = null; // Arena.allocate below, within the JVM's direct-memory limit
        }
        ALIGNED_ALLOC = alloc;
        FREE = free;
    }

    /**
     * {@code n} bytes of {@value #ALIGN}-aligned native memory freed when this closes: from the C
     * library (not counted against -XX:MaxDirectMemorySize, which defaults to -Xmx and would
     * refuse a model's weights beside a small heap), or from the arena without native access.
     */
    private MemorySegment allocate(long n) {
        if (ALIGNED_ALLOC != null) {
            long size = (n + ALIGN - 1) / ALIGN * ALIGN; // aligned_alloc wants a multiple of the alignment
            MemorySegment p;
            try {
                p = (MemorySegment) ALIGNED_ALLOC.invokeExact((long) ALIGN, size);
            } catch (Throwable t) {
                throw new IllegalStateException("aligned_alloc failed: " + t, t);
            }
            if (p.address() == 0) {
                throw new IllegalStateException("out of native memory for " + n + " bytes of weights");
            }
            return p.reinterpret(n, arena, SharedWeights::free);
        }
        return arena.allocate(n, ALIGN);
    }

    private static void free(MemorySegment p) {
        try {
            FREE.invokeExact(p);
        } catch (Throwable t) {
            // freeing at close: nothing to recover
        }
    }

    private static OnnxJavaType javaType(int onnxType) {
        return switch (onnxType) {
            case 1 -> OnnxJavaType.FLOAT;
            case 2 -> OnnxJavaType.UINT8;
            case 3 -> OnnxJavaType.INT8;
            case 5 -> OnnxJavaType.INT16;
            case 6 -> OnnxJavaType.INT32;
            case 7 -> OnnxJavaType.INT64;
            case 9 -> OnnxJavaType.BOOL;
            case 10 -> OnnxJavaType.FLOAT16;
            case 11 -> OnnxJavaType.DOUBLE;
            case 16 -> OnnxJavaType.BFLOAT16;
            default -> null;
        };
    }

    /**
     * Gives piece {@code s}'s shared tensors to {@code so} (a session options object for that
     * piece alone) and turns prepacking off unless {@code kvq.engine.prepack=on}.
     */
    void apply(OrtSession.SessionOptions so, int s) throws OrtException {
        Map<String, OnnxTensorLike> mine = pieces.get(s);
        if ("external".equals(System.getProperty("kvq.engine.shareApi"))) {
            if (!mine.isEmpty()) {
                so.addExternalInitializers(mine);
            }
        } else {
            for (Map.Entry<String, OnnxTensorLike> e : mine.entrySet()) {
                so.addInitializer(e.getKey(), e.getValue());
            }
        }
        if (!"on".equals(System.getProperty("kvq.engine.prepack"))
                && !so.getConfigEntries().containsKey("session.disable_prepacking")) {
            so.addConfigEntry("session.disable_prepacking", "1");
        }
    }

    @Override
    public void close() {
        for (Region t : byRegion.values()) {
            t.tensor().close();
        }
        byRegion.clear();
        pieces.clear();
        segments.clear();
        try {
            arena.close();
        } catch (IllegalStateException e) {
            // already closed
        }
    }
}
