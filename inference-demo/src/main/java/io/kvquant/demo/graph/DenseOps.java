package io.kvquant.demo.graph;

import io.kvquant.demo.graph.OnnxModel.Node;
import io.kvquant.simd.GemvOps;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The ONNX operators a one-token decode step of a transformer's dense layers uses, in plain Java
 * on fp32 and integer tensors, for {@code io.kvquant.demo.onnx.JavaPieces}. Each operator is
 * compiled once per node ({@link #compile}) into a {@link Kernel} that reads its attributes at
 * compile time; any operator, attribute value, element type or domain not implemented here is
 * refused at compile time with one line naming it ({@link Unsupported}), never approximated.
 * The semantics are ONNX's (opset 13+ forms; the older attribute forms of Unsqueeze, Squeeze,
 * Split, Slice and the Reduce operators are read too).
 */
public final class DenseOps {

    private DenseOps() {
    }

    /** An operator, attribute or type this interpreter does not implement: the message names it. */
    public static final class Unsupported extends RuntimeException {
        public Unsupported(String message) {
            super(message);
        }
    }

    /**
     * A tensor: fp32 ({@link OnnxModel#FLOAT}) in {@code f} or in native memory {@code seg} (a
     * weight, little-endian, row-major), or INT64/INT32/BOOL values held as longs in {@code l}.
     */
    public static final class T {
        public final int type;
        public final int[] shape;
        final float[] f;
        final long[] l;
        final MemorySegment seg;

        T(int type, int[] shape, float[] f, long[] l, MemorySegment seg) {
            this.type = type;
            this.shape = shape;
            this.f = f;
            this.l = l;
            this.seg = seg;
        }

        public static T floats(int[] shape, float[] f) {
            if (f.length != DenseOps.size(shape)) {
                throw new IllegalArgumentException(f.length + " floats for shape " + Arrays.toString(shape));
            }
            return new T(OnnxModel.FLOAT, shape, f, null, null);
        }

        public static T longs(int type, int[] shape, long[] l) {
            if (l.length != DenseOps.size(shape)) {
                throw new IllegalArgumentException(l.length + " values for shape " + Arrays.toString(shape));
            }
            return new T(type, shape, null, l, null);
        }

        /** A weight in native memory (fp32, native byte order), used in place. */
        public static T weight(int[] shape, MemorySegment seg) {
            if (seg.byteSize() < 4L * DenseOps.size(shape)) {
                throw new IllegalArgumentException(seg.byteSize() + " bytes for fp32 shape " + Arrays.toString(shape));
            }
            return new T(OnnxModel.FLOAT, shape, null, null, seg);
        }

        public int size() {
            return DenseOps.size(shape);
        }

        public boolean isFloat() {
            return type == OnnxModel.FLOAT;
        }

        /** The values as floats (a weight in native memory is copied out; integers are an error). */
        public float[] f() {
            if (f != null) {
                return f;
            }
            if (seg != null) {
                return seg.asSlice(0, 4L * size()).toArray(ValueLayout.JAVA_FLOAT);
            }
            throw new IllegalStateException("a tensor of element type " + type + " where fp32 is needed");
        }

        /** The values as longs (integer and bool tensors). */
        public long[] l() {
            if (l != null) {
                return l;
            }
            throw new IllegalStateException("an fp32 tensor where integers are needed");
        }

        /** Element {@code i} as a double, whatever the type. */
        double at(int i) {
            return l != null ? l[i] : f != null ? f[i] : seg.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i);
        }
    }

    /**
     * Runs {@code task.accept(i)} for every {@code i < n}, the first half preferably on the
     * calling thread and the second half on another thread when one is there to take it (each
     * side keeping the same chunks from call to call), and returns when all are done.
     */
    public interface Parallel {
        void split(int n, java.util.function.IntConsumer task);

        /** Every chunk in turn on the calling thread. */
        Parallel INLINE = (n, task) -> {
            for (int i = 0; i < n; i++) {
                task.accept(i);
            }
        };
    }

    /** Products of at least this many multiply-adds are split by columns ({@link Parallel}). */
    static final int SPLIT_MACS = 1 << 15;
    /**
     * Column chunks per split product, at most ({@code kvq.engine.denseChunks}, default 2: one half
     * per thread). Measured on the bundled model at 1K, alternated: 8 chunks (a late thread holds up
     * less, but the halves move between cores) 2.2–3.2 ms per step against 1.0–2.2 with 2.
     */
    static final int CHUNKS = Math.max(2, Integer.getInteger("kvq.engine.denseChunks", 2));

    /** One compiled node: inputs (null for an omitted optional input) to outputs. */
    @FunctionalInterface
    public interface Kernel {
        T[] run(T[] in);
    }

    static int size(int[] shape) {
        long n = 1;
        for (int d : shape) {
            if (d < 0) {
                throw new IllegalArgumentException("negative dimension in " + Arrays.toString(shape));
            }
            n *= d;
        }
        if (n > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("tensor of shape " + Arrays.toString(shape) + " is too large");
        }
        return (int) n;
    }

    // ---------------------------------------------------------------- attributes and constants

    static Pb attr(Node n, String name) {
        Pb.Field f = n.attribute(name);
        return f == null ? null : f.message();
    }

    static long attrInt(Node n, String name, long dflt) {
        Pb a = attr(n, name);
        return a == null ? dflt : a.varint(3, dflt);
    }

    static float attrFloat(Node n, String name, float dflt) {
        Pb a = attr(n, name);
        Pb.Field f = a == null ? null : a.one(2);
        return f == null ? dflt : Float.intBitsToFloat((int) f.bits());
    }

    static long[] attrInts(Node n, String name) {
        Pb a = attr(n, name);
        if (a == null) {
            return null;
        }
        List<Long> r = new ArrayList<>();
        for (Pb.Field f : a.all(8)) {
            if (f.wireType() == 2) {
                packedVarints(f.bytes(), r);
            } else {
                r.add(f.bits());
            }
        }
        return r.stream().mapToLong(Long::longValue).toArray();
    }

    private static void packedVarints(byte[] b, List<Long> out) {
        int i = 0;
        while (i < b.length) {
            long v = 0;
            int shift = 0;
            while (true) {
                byte x = b[i++];
                v |= (long) (x & 0x7f) << shift;
                shift += 7;
                if ((x & 0x80) == 0) {
                    break;
                }
            }
            out.add(v);
        }
    }

    /**
     * A TensorProto held in the message itself (raw_data, float_data, int32_data or int64_data);
     * external data is the caller's ({@code external} null: refused).
     */
    public static T tensor(Pb t, String what) {
        int type = (int) t.varint(2, 0);
        List<Long> dl = new ArrayList<>();
        for (Pb.Field f : t.all(1)) {
            if (f.wireType() == 2) {
                packedVarints(f.bytes(), dl);
            } else {
                dl.add(f.bits());
            }
        }
        int[] shape = new int[dl.size()];
        for (int k = 0; k < shape.length; k++) {
            shape[k] = Math.toIntExact(dl.get(k));
        }
        int n = size(shape);
        if (t.varint(14, 0) == 1) {
            throw new Unsupported(what + " has external data where a constant was expected");
        }
        Pb.Field raw = t.one(9);
        switch (type) {
            case OnnxModel.FLOAT -> {
                float[] v = new float[n];
                if (raw != null) {
                    ByteBuffer.wrap(raw.bytes()).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(v);
                } else {
                    int k = 0;
                    for (Pb.Field f : t.all(4)) {
                        if (f.wireType() == 5) {
                            v[k++] = Float.intBitsToFloat((int) f.bits());
                        } else {
                            ByteBuffer b = ByteBuffer.wrap(f.bytes()).order(ByteOrder.LITTLE_ENDIAN);
                            while (b.hasRemaining()) {
                                v[k++] = b.getFloat();
                            }
                        }
                    }
                    if (k != n) {
                        throw new Unsupported(what + ": " + k + " floats stored for " + n + " elements");
                    }
                }
                return T.floats(shape, v);
            }
            case OnnxModel.INT64, OnnxModel.INT32, OnnxModel.BOOL -> {
                long[] v = new long[n];
                if (raw != null) {
                    ByteBuffer b = ByteBuffer.wrap(raw.bytes()).order(ByteOrder.LITTLE_ENDIAN);
                    for (int k = 0; k < n; k++) {
                        v[k] = type == OnnxModel.INT64 ? b.getLong() : type == OnnxModel.INT32 ? b.getInt() : b.get();
                    }
                } else {
                    List<Long> vals = new ArrayList<>();
                    for (Pb.Field f : t.all(type == OnnxModel.INT64 ? 7 : 5)) {
                        if (f.wireType() == 2) {
                            packedVarints(f.bytes(), vals);
                        } else {
                            vals.add(f.bits());
                        }
                    }
                    if (vals.size() != n) {
                        throw new Unsupported(what + ": " + vals.size() + " integers stored for " + n + " elements");
                    }
                    for (int k = 0; k < n; k++) {
                        long x = vals.get(k);
                        v[k] = type == OnnxModel.INT64 ? x : (int) x;
                    }
                }
                return T.longs(type, shape, v);
            }
            default -> throw new Unsupported(what + " has ONNX element type " + type + " (the Java decode step takes fp32, "
                    + "int64, int32 and bool)");
        }
    }

    // ---------------------------------------------------------------- compile

    /**
     * The kernel of node {@code n} ({@code opset}: the model's default-domain opset). Refuses, with
     * the operator named, what is not implemented.
     */
    public static Kernel compile(Node n, long opset) {
        return compile(n, opset, Parallel.INLINE);
    }

    /** As {@link #compile(Node, long)}, large matrix products split in two by {@code par}. */
    public static Kernel compile(Node n, long opset, Parallel par) {
        if (!n.domain().isEmpty() && !n.domain().equals("ai.onnx")) {
            throw new Unsupported("operator " + n.domain() + ":" + n.op() + " (node " + n.name() + ")");
        }
        int outs = (int) n.outputs().stream().filter(o -> !o.isEmpty()).count();
        String op = n.op();
        Kernel k = switch (op) {
            case "Identity" -> in -> new T[] {in[0]};
            case "Constant" -> constant(n);
            case "Cast" -> cast(n);
            case "Shape" -> shapeOp(n);
            case "Size" -> in -> new T[] {T.longs(OnnxModel.INT64, new int[0], new long[] {in[0].size()})};
            case "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Less", "Greater", "LessOrEqual",
                 "GreaterOrEqual", "And", "Or" -> {
                if ((op.equals("Max") || op.equals("Min")) && n.inputs().size() != 2) {
                    throw new Unsupported(op + " with " + n.inputs().size() + " inputs (node " + n.name() + ")");
                }
                yield in -> new T[] {binary(op, in[0], in[1])};
            }
            case "Where" -> in -> new T[] {where(in[0], in[1], in[2])};
            case "Neg", "Sqrt", "Reciprocal", "Sigmoid", "Tanh", "Exp", "Log", "Cos", "Sin", "Erf", "Relu", "Abs", "Floor",
                 "Ceil", "Not" -> in -> new T[] {unary(op, in[0])};
            case "Reshape" -> {
                boolean allowZero = attrInt(n, "allowzero", 0) != 0;
                yield in -> new T[] {reshape(in[0], in[1].l(), allowZero)};
            }
            case "Unsqueeze" -> {
                long[] axes = attrInts(n, "axes");
                yield in -> new T[] {unsqueeze(in[0], in.length > 1 && in[1] != null ? in[1].l() : axes)};
            }
            case "Squeeze" -> {
                long[] axes = attrInts(n, "axes");
                yield in -> new T[] {squeeze(in[0], in.length > 1 && in[1] != null ? in[1].l() : axes)};
            }
            case "Flatten" -> {
                long axis = attrInt(n, "axis", 1);
                yield in -> {
                    int r = in[0].shape.length;
                    int a = (int) (axis < 0 ? axis + r : axis);
                    int outer = 1;
                    for (int i = 0; i < a; i++) {
                        outer *= in[0].shape[i];
                    }
                    return new T[] {reshaped(in[0], new int[] {outer, in[0].size() / Math.max(outer, 1)})};
                };
            }
            case "Transpose" -> {
                long[] perm = attrInts(n, "perm");
                yield in -> new T[] {transpose(in[0], perm)};
            }
            case "Concat" -> {
                long axis = attrInt(n, "axis", Long.MIN_VALUE);
                if (axis == Long.MIN_VALUE) {
                    throw new Unsupported("Concat without an axis (node " + n.name() + ")");
                }
                yield in -> new T[] {concat(in, axis)};
            }
            case "Split" -> split(n, outs, opset);
            case "Slice" -> slice(n);
            case "Gather" -> {
                long axis = attrInt(n, "axis", 0);
                yield in -> new T[] {gather(in[0], in[1], axis)};
            }
            case "Expand" -> in -> new T[] {expand(in[0], toInts(in[1].l()))};
            case "ConstantOfShape" -> {
                Pb v = attr(n, "value");
                T value = v == null ? T.floats(new int[] {1}, new float[] {0f}) : tensor(v.one(5).message(), "ConstantOfShape value");
                yield in -> new T[] {fill(toInts(in[0].l()), value)};
            }
            case "Range" -> in -> new T[] {range(in[0], in[1], in[2])};
            case "ReduceMean", "ReduceSum", "ReduceMax" -> reduce(n, opset);
            case "MatMul" -> in -> new T[] {matmul(in[0], in[1], par)};
            case "Softmax" -> {
                long axis = attrInt(n, "axis", opset >= 13 ? -1 : 1);
                yield in -> {
                    int r = in[0].shape.length;
                    int a = (int) (axis < 0 ? axis + r : axis);
                    if (opset < 13 && a != r - 1) {
                        throw new Unsupported("Softmax of opset " + opset + " over axis " + axis + " of a rank-" + r + " tensor");
                    }
                    return new T[] {softmax(in[0], a)};
                };
            }
            case "LayerNormalization" -> {
                long axis = attrInt(n, "axis", -1);
                float eps = attrFloat(n, "epsilon", 1e-5f);
                if (outs != 1) {
                    throw new Unsupported("LayerNormalization with its mean / inverse-deviation outputs (node " + n.name() + ")");
                }
                yield in -> new T[] {layerNorm(in[0], in[1], in.length > 2 ? in[2] : null, axis, eps)};
            }
            default -> throw new Unsupported("operator " + op + " (node " + n.name() + ")");
        };
        return k;
    }

    // ---------------------------------------------------------------- operators

    private static Kernel constant(Node n) {
        Pb v = attr(n, "value");
        T t;
        if (v != null) {
            t = tensor(v.one(5).message(), "Constant " + n.name());
        } else if (attr(n, "value_float") != null) {
            t = T.floats(new int[0], new float[] {attrFloat(n, "value_float", 0f)});
        } else if (attr(n, "value_int") != null) {
            t = T.longs(OnnxModel.INT64, new int[0], new long[] {attrInt(n, "value_int", 0)});
        } else if (attr(n, "value_ints") != null) {
            long[] x = attrInts(n, "value_ints");
            t = T.longs(OnnxModel.INT64, new int[] {x.length}, x);
        } else if (attr(n, "value_floats") != null) {
            List<Float> r = new ArrayList<>();
            for (Pb.Field f : attr(n, "value_floats").all(7)) {
                if (f.wireType() == 2) {
                    ByteBuffer b = ByteBuffer.wrap(f.bytes()).order(ByteOrder.LITTLE_ENDIAN);
                    while (b.hasRemaining()) {
                        r.add(b.getFloat());
                    }
                } else {
                    r.add(Float.intBitsToFloat((int) f.bits()));
                }
            }
            float[] x = new float[r.size()];
            for (int i = 0; i < x.length; i++) {
                x[i] = r.get(i);
            }
            t = T.floats(new int[] {x.length}, x);
        } else {
            throw new Unsupported("a Constant of a kind other than value, value_float(s), value_int(s) (node " + n.name() + ")");
        }
        T c = t;
        return in -> new T[] {c};
    }

    private static Kernel cast(Node n) {
        int to = (int) attrInt(n, "to", 0);
        if (to != OnnxModel.FLOAT && to != OnnxModel.INT64 && to != OnnxModel.INT32 && to != OnnxModel.BOOL) {
            throw new Unsupported("Cast to ONNX element type " + to + " (node " + n.name() + ")");
        }
        return in -> {
            T x = in[0];
            int sz = x.size();
            if (to == OnnxModel.FLOAT) {
                if (x.isFloat()) {
                    return new T[] {x};
                }
                float[] r = new float[sz];
                for (int i = 0; i < sz; i++) {
                    r[i] = x.l[i];
                }
                return new T[] {T.floats(x.shape, r)};
            }
            long[] r = new long[sz];
            for (int i = 0; i < sz; i++) {
                double v = x.at(i);
                r[i] = switch (to) {
                    case OnnxModel.BOOL -> v != 0 ? 1 : 0;
                    case OnnxModel.INT32 -> x.isFloat() ? (int) v : (int) x.l[i];
                    default -> x.isFloat() ? (long) v : x.l[i];
                };
            }
            return new T[] {T.longs(to, x.shape, r)};
        };
    }

    private static Kernel shapeOp(Node n) {
        long start = attrInt(n, "start", 0);
        Pb endA = attr(n, "end");
        long end = endA == null ? Long.MAX_VALUE : attrInt(n, "end", 0);
        return in -> {
            int r = in[0].shape.length;
            int s = clampAxis(start, r);
            int e = end == Long.MAX_VALUE ? r : clampAxis(end, r);
            long[] v = new long[Math.max(0, e - s)];
            for (int i = 0; i < v.length; i++) {
                v[i] = in[0].shape[s + i];
            }
            return new T[] {T.longs(OnnxModel.INT64, new int[] {v.length}, v)};
        };
    }

    private static int clampAxis(long a, int r) {
        long x = a < 0 ? a + r : a;
        return (int) Math.max(0, Math.min(r, x));
    }

    static int[] toInts(long[] v) {
        int[] r = new int[v.length];
        for (int i = 0; i < v.length; i++) {
            r[i] = Math.toIntExact(v[i]);
        }
        return r;
    }

    static int[] broadcastShape(int[] a, int[] b) {
        int r = Math.max(a.length, b.length);
        int[] s = new int[r];
        for (int i = 0; i < r; i++) {
            int da = i < r - a.length ? 1 : a[i - (r - a.length)];
            int db = i < r - b.length ? 1 : b[i - (r - b.length)];
            if (da != db && da != 1 && db != 1) {
                throw new IllegalArgumentException("shapes " + Arrays.toString(a) + " and " + Arrays.toString(b)
                        + " do not broadcast");
            }
            s[i] = da == 1 ? db : da;
        }
        return s;
    }

    /** For each element of {@code out}, the index into a tensor of shape {@code in} broadcast to it (null: the same). */
    static int[] broadcastIndex(int[] out, int[] in) {
        if (Arrays.equals(out, in)) {
            return null;
        }
        int r = out.length;
        int[] strides = new int[r];
        int s = 1;
        for (int i = r - 1; i >= 0; i--) {
            int j = i - (r - in.length);
            int d = j < 0 ? 1 : in[j];
            strides[i] = d == 1 ? 0 : s;
            s *= d;
        }
        return walk(out, strides);
    }

    /**
     * For each element of a tensor of shape {@code shape} in row-major order, the offset
     * {@code Σ pos[i]·strides[i]} of its position: a broadcast source (stride 0 on broadcast
     * dimensions) or a transposed source.
     */
    private static int[] walk(int[] shape, int[] strides) {
        int r = shape.length;
        int n = size(shape);
        int[] idx = new int[n];
        int[] pos = new int[r];
        int cur = 0;
        for (int e = 0; e < n; e++) {
            idx[e] = cur;
            for (int i = r - 1; i >= 0; i--) {
                pos[i]++;
                cur += strides[i];
                if (pos[i] < shape[i]) {
                    break;
                }
                cur -= strides[i] * pos[i];
                pos[i] = 0;
            }
        }
        return idx;
    }

    static T binary(String op, T a, T b) {
        int[] shape = broadcastShape(a.shape, b.shape);
        int n = size(shape);
        boolean cmp = switch (op) {
            case "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or" -> true;
            default -> false;
        };
        if (a.isFloat() != b.isFloat()) {
            throw new IllegalArgumentException(op + " of an fp32 and an integer tensor");
        }
        int[] ia = broadcastIndex(shape, a.shape);
        int[] ib = broadcastIndex(shape, b.shape);
        if (a.isFloat() && !cmp) {
            float[] x = a.f();
            float[] y = b.f();
            float[] r = new float[n];
            if (ia == null && y.length == 1) {
                float c = y[0];
                switch (op) {
                    case "Add" -> { for (int i = 0; i < n; i++) { r[i] = x[i] + c; } }
                    case "Sub" -> { for (int i = 0; i < n; i++) { r[i] = x[i] - c; } }
                    case "Mul" -> { for (int i = 0; i < n; i++) { r[i] = x[i] * c; } }
                    case "Div" -> { for (int i = 0; i < n; i++) { r[i] = x[i] / c; } }
                    default -> { for (int i = 0; i < n; i++) { r[i] = fop(op, x[i], c); } }
                }
                return T.floats(shape, r);
            }
            if (ia == null && ib == null) {
                switch (op) {
                    case "Add" -> { for (int i = 0; i < n; i++) { r[i] = x[i] + y[i]; } }
                    case "Mul" -> { for (int i = 0; i < n; i++) { r[i] = x[i] * y[i]; } }
                    default -> { for (int i = 0; i < n; i++) { r[i] = fop(op, x[i], y[i]); } }
                }
                return T.floats(shape, r);
            }
            switch (op) { // broadcast products and sums (norm scales, biases) run every step: the op is picked once
                case "Add" -> { for (int i = 0; i < n; i++) { r[i] = x[ia == null ? i : ia[i]] + y[ib == null ? i : ib[i]]; } }
                case "Mul" -> { for (int i = 0; i < n; i++) { r[i] = x[ia == null ? i : ia[i]] * y[ib == null ? i : ib[i]]; } }
                default -> { for (int i = 0; i < n; i++) { r[i] = fop(op, x[ia == null ? i : ia[i]], y[ib == null ? i : ib[i]]); } }
            }
            return T.floats(shape, r);
        }
        long[] r = new long[n];
        for (int i = 0; i < n; i++) {
            int ai = ia == null ? i : ia[i];
            int bi = ib == null ? i : ib[i];
            if (a.isFloat()) {
                float x = a.f()[ai];
                float y = b.f()[bi];
                r[i] = switch (op) {
                    case "Equal" -> x == y ? 1 : 0;
                    case "Less" -> x < y ? 1 : 0;
                    case "Greater" -> x > y ? 1 : 0;
                    case "LessOrEqual" -> x <= y ? 1 : 0;
                    case "GreaterOrEqual" -> x >= y ? 1 : 0;
                    default -> throw new Unsupported(op + " of fp32 tensors");
                };
            } else {
                long x = a.l[ai];
                long y = b.l[bi];
                r[i] = switch (op) {
                    case "Add" -> x + y;
                    case "Sub" -> x - y;
                    case "Mul" -> x * y;
                    case "Div" -> {
                        if (y == 0) {
                            throw new ArithmeticException("integer division by zero");
                        }
                        yield x / y; // truncates toward zero, as C++ does
                    }
                    case "Max" -> Math.max(x, y);
                    case "Min" -> Math.min(x, y);
                    case "Equal" -> x == y ? 1 : 0;
                    case "Less" -> x < y ? 1 : 0;
                    case "Greater" -> x > y ? 1 : 0;
                    case "LessOrEqual" -> x <= y ? 1 : 0;
                    case "GreaterOrEqual" -> x >= y ? 1 : 0;
                    case "And" -> (x != 0 && y != 0) ? 1 : 0;
                    case "Or" -> (x != 0 || y != 0) ? 1 : 0;
                    default -> throw new Unsupported(op + " of integer tensors");
                };
            }
        }
        int type = cmp ? OnnxModel.BOOL : a.type;
        if (type == OnnxModel.INT32) {
            for (int i = 0; i < n; i++) {
                r[i] = (int) r[i];
            }
        }
        return T.longs(type, shape, r);
    }

    private static float fop(String op, float x, float y) {
        return switch (op) {
            case "Add" -> x + y;
            case "Sub" -> x - y;
            case "Mul" -> x * y;
            case "Div" -> x / y;
            case "Pow" -> y == 2f ? x * x : y == 1f ? x : y == 0.5f ? (float) Math.sqrt(x) : (float) Math.pow(x, y);
            case "Max" -> Math.max(x, y);
            case "Min" -> Math.min(x, y);
            default -> throw new Unsupported(op + " of fp32 tensors");
        };
    }

    static T where(T c, T a, T b) {
        int[] shape = broadcastShape(broadcastShape(c.shape, a.shape), b.shape);
        int n = size(shape);
        int[] ic = broadcastIndex(shape, c.shape);
        int[] ia = broadcastIndex(shape, a.shape);
        int[] ib = broadcastIndex(shape, b.shape);
        if (a.isFloat() != b.isFloat()) {
            throw new IllegalArgumentException("Where of an fp32 and an integer tensor");
        }
        if (a.isFloat()) {
            float[] x = a.f();
            float[] y = b.f();
            float[] r = new float[n];
            for (int i = 0; i < n; i++) {
                r[i] = c.l()[ic == null ? i : ic[i]] != 0 ? x[ia == null ? i : ia[i]] : y[ib == null ? i : ib[i]];
            }
            return T.floats(shape, r);
        }
        long[] r = new long[n];
        for (int i = 0; i < n; i++) {
            r[i] = c.l()[ic == null ? i : ic[i]] != 0 ? a.l[ia == null ? i : ia[i]] : b.l[ib == null ? i : ib[i]];
        }
        return T.longs(a.type, shape, r);
    }

    static T unary(String op, T a) {
        int n = a.size();
        if (!a.isFloat()) {
            long[] x = a.l();
            long[] r = new long[n];
            for (int i = 0; i < n; i++) {
                r[i] = switch (op) {
                    case "Neg" -> -x[i];
                    case "Abs" -> Math.abs(x[i]);
                    case "Not" -> x[i] == 0 ? 1 : 0;
                    case "Relu" -> Math.max(0, x[i]);
                    default -> throw new Unsupported(op + " of integer tensors");
                };
            }
            return T.longs(a.type, a.shape, r);
        }
        float[] x = a.f();
        float[] r = new float[n];
        switch (op) {
            case "Neg" -> { for (int i = 0; i < n; i++) { r[i] = -x[i]; } }
            case "Sqrt" -> { for (int i = 0; i < n; i++) { r[i] = (float) Math.sqrt(x[i]); } }
            case "Reciprocal" -> { for (int i = 0; i < n; i++) { r[i] = 1f / x[i]; } }
            case "Sigmoid" -> { for (int i = 0; i < n; i++) { r[i] = (float) (1.0 / (1.0 + Math.exp(-x[i]))); } }
            case "Tanh" -> { for (int i = 0; i < n; i++) { r[i] = (float) Math.tanh(x[i]); } }
            case "Exp" -> { for (int i = 0; i < n; i++) { r[i] = (float) Math.exp(x[i]); } }
            case "Log" -> { for (int i = 0; i < n; i++) { r[i] = (float) Math.log(x[i]); } }
            case "Cos" -> { for (int i = 0; i < n; i++) { r[i] = (float) Math.cos(x[i]); } }
            case "Sin" -> { for (int i = 0; i < n; i++) { r[i] = (float) Math.sin(x[i]); } }
            case "Erf" -> { for (int i = 0; i < n; i++) { r[i] = (float) erf(x[i]); } }
            case "Relu" -> { for (int i = 0; i < n; i++) { r[i] = Math.max(0f, x[i]); } }
            case "Abs" -> { for (int i = 0; i < n; i++) { r[i] = Math.abs(x[i]); } }
            case "Floor" -> { for (int i = 0; i < n; i++) { r[i] = (float) Math.floor(x[i]); } }
            case "Ceil" -> { for (int i = 0; i < n; i++) { r[i] = (float) Math.ceil(x[i]); } }
            default -> throw new Unsupported(op + " of fp32 tensors");
        }
        return T.floats(a.shape, r);
    }

    /**
     * erf(x) to about 1e-15 absolute in double (the series below 2.5 in |x|, the continued
     * fraction of erfc above), well below fp32's resolution.
     */
    static double erf(double x) {
        double ax = Math.abs(x);
        if (ax < 2.5) {
            double term = ax;
            double sum = ax;
            double x2 = ax * ax;
            for (int k = 1; k < 200; k++) {
                term *= -x2 / k;
                double add = term / (2 * k + 1);
                sum += add;
                if (Math.abs(add) < 1e-17 * Math.abs(sum)) {
                    break;
                }
            }
            double r = 2 / Math.sqrt(Math.PI) * sum;
            return x < 0 ? -r : r;
        }
        if (ax > 6) {
            return x < 0 ? -1 : 1;
        }
        // erfc(x) = exp(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + 2/(x + ...)))))
        double f = ax;
        for (int k = 60; k >= 1; k--) {
            f = ax + (k / 2.0) / f;
        }
        double erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
        return x < 0 ? erfc - 1 : 1 - erfc;
    }

    static T reshaped(T a, int[] shape) {
        return new T(a.type, shape, a.f, a.l, a.seg);
    }

    static T reshape(T a, long[] target, boolean allowZero) {
        int[] s = new int[target.length];
        int infer = -1;
        long known = 1;
        for (int i = 0; i < s.length; i++) {
            long d = target[i];
            if (d == 0 && !allowZero) {
                if (i >= a.shape.length) {
                    throw new IllegalArgumentException("Reshape copies dimension " + i + " of a rank-" + a.shape.length + " tensor");
                }
                d = a.shape[i];
            }
            if (d == -1) {
                if (infer >= 0) {
                    throw new IllegalArgumentException("Reshape with two -1 dimensions");
                }
                infer = i;
                continue;
            }
            s[i] = Math.toIntExact(d);
            known *= d;
        }
        if (infer >= 0) {
            s[infer] = (int) (known == 0 ? 0 : a.size() / known);
        }
        if (size(s) != a.size()) {
            throw new IllegalArgumentException("Reshape of " + Arrays.toString(a.shape) + " to " + Arrays.toString(target));
        }
        return reshaped(a, s);
    }

    static T unsqueeze(T a, long[] axes) {
        if (axes == null) {
            throw new Unsupported("Unsqueeze without axes");
        }
        int r = a.shape.length + axes.length;
        boolean[] ins = new boolean[r];
        for (long ax : axes) {
            int x = (int) (ax < 0 ? ax + r : ax);
            if (x < 0 || x >= r || ins[x]) {
                throw new IllegalArgumentException("Unsqueeze axes " + Arrays.toString(axes) + " for rank " + a.shape.length);
            }
            ins[x] = true;
        }
        int[] s = new int[r];
        int j = 0;
        for (int i = 0; i < r; i++) {
            s[i] = ins[i] ? 1 : a.shape[j++];
        }
        return reshaped(a, s);
    }

    static T squeeze(T a, long[] axes) {
        int r = a.shape.length;
        boolean[] drop = new boolean[r];
        if (axes == null) {
            for (int i = 0; i < r; i++) {
                drop[i] = a.shape[i] == 1;
            }
        } else {
            for (long ax : axes) {
                int x = (int) (ax < 0 ? ax + r : ax);
                if (x < 0 || x >= r || a.shape[x] != 1) {
                    throw new IllegalArgumentException("Squeeze axis " + ax + " of shape " + Arrays.toString(a.shape));
                }
                drop[x] = true;
            }
        }
        int[] s = new int[r - (int) java.util.stream.IntStream.range(0, r).filter(i -> drop[i]).count()];
        int j = 0;
        for (int i = 0; i < r; i++) {
            if (!drop[i]) {
                s[j++] = a.shape[i];
            }
        }
        return reshaped(a, s);
    }

    static int[] strides(int[] shape) {
        int[] st = new int[shape.length];
        int s = 1;
        for (int i = shape.length - 1; i >= 0; i--) {
            st[i] = s;
            s *= shape[i];
        }
        return st;
    }

    static T transpose(T a, long[] permAttr) {
        int r = a.shape.length;
        int[] perm = new int[r];
        for (int i = 0; i < r; i++) {
            perm[i] = permAttr == null ? r - 1 - i : (int) permAttr[i];
        }
        int[] s = new int[r];
        for (int i = 0; i < r; i++) {
            s[i] = a.shape[perm[i]];
        }
        // moving only dimensions of size 1 keeps the order of the elements
        int last = -1;
        boolean order = true;
        for (int i = 0; i < r; i++) {
            if (a.shape[perm[i]] != 1) {
                if (perm[i] < last) {
                    order = false;
                }
                last = perm[i];
            }
        }
        if (order) {
            return reshaped(a, s);
        }
        int[] ist = strides(a.shape);
        int[] src = new int[r];
        for (int i = 0; i < r; i++) {
            src[i] = ist[perm[i]];
        }
        return gathered(a, s, walk(s, src));
    }

    /** Elements {@code idx} of {@code a} as a tensor of {@code shape}. */
    private static T gathered(T a, int[] shape, int[] idx) {
        if (a.isFloat()) {
            float[] x = a.f();
            float[] r = new float[idx.length];
            for (int i = 0; i < idx.length; i++) {
                r[i] = x[idx[i]];
            }
            return T.floats(shape, r);
        }
        long[] r = new long[idx.length];
        for (int i = 0; i < idx.length; i++) {
            r[i] = a.l[idx[i]];
        }
        return T.longs(a.type, shape, r);
    }

    static T concat(T[] in, long axisAttr) {
        List<T> parts = new ArrayList<>();
        for (T t : in) {
            if (t != null) {
                parts.add(t);
            }
        }
        T first = parts.get(0);
        int r = first.shape.length;
        int axis = (int) (axisAttr < 0 ? axisAttr + r : axisAttr);
        int[] s = first.shape.clone();
        s[axis] = 0;
        for (T t : parts) {
            if (t.shape.length != r || t.type != first.type && !(isInt(t.type) && isInt(first.type))) {
                throw new IllegalArgumentException("Concat of mismatched tensors");
            }
            s[axis] += t.shape[axis];
        }
        int outer = 1;
        for (int i = 0; i < axis; i++) {
            outer *= s[i];
        }
        int inner = 1;
        for (int i = axis + 1; i < r; i++) {
            inner *= s[i];
        }
        int n = size(s);
        float[] rf = first.isFloat() ? new float[n] : null;
        long[] rl = first.isFloat() ? null : new long[n];
        int off = 0;
        for (int o = 0; o < outer; o++) {
            for (T t : parts) {
                int len = t.shape[axis] * inner;
                if (rf != null) {
                    System.arraycopy(t.f(), o * len, rf, off, len);
                } else {
                    System.arraycopy(t.l(), o * len, rl, off, len);
                }
                off += len;
            }
        }
        return rf != null ? T.floats(s, rf) : T.longs(first.type, s, rl);
    }

    private static boolean isInt(int type) {
        return type == OnnxModel.INT64 || type == OnnxModel.INT32;
    }

    private static Kernel split(Node n, int outs, long opset) {
        long axisAttr = attrInt(n, "axis", 0);
        long[] splitAttr = attrInts(n, "split");
        long num = attrInt(n, "num_outputs", outs);
        return in -> {
            T a = in[0];
            int r = a.shape.length;
            int axis = (int) (axisAttr < 0 ? axisAttr + r : axisAttr);
            long[] sizes = in.length > 1 && in[1] != null ? in[1].l() : splitAttr;
            int dim = a.shape[axis];
            if (sizes == null) {
                int k = (int) num;
                int each = (dim + k - 1) / k;
                sizes = new long[k];
                for (int i = 0; i < k; i++) {
                    sizes[i] = Math.max(0, Math.min(each, dim - (long) each * i));
                }
                if (opset < 18 && dim % k != 0) {
                    throw new IllegalArgumentException("Split of " + dim + " into " + k + " unequal parts");
                }
            }
            T[] res = new T[sizes.length];
            long start = 0;
            for (int i = 0; i < sizes.length; i++) {
                res[i] = sliceAxis(a, axis, (int) start, (int) (start + sizes[i]), 1);
                start += sizes[i];
            }
            if (start != dim) {
                throw new IllegalArgumentException("Split sizes " + Arrays.toString(sizes) + " for a dimension of " + dim);
            }
            return res;
        };
    }

    private static Kernel slice(Node n) {
        long[] sA = attrInts(n, "starts");
        long[] eA = attrInts(n, "ends");
        long[] aA = attrInts(n, "axes");
        return in -> {
            T a = in[0];
            long[] starts = in.length > 1 && in[1] != null ? in[1].l() : sA;
            long[] ends = in.length > 2 && in[2] != null ? in[2].l() : eA;
            long[] axes = in.length > 3 && in[3] != null ? in[3].l() : aA;
            long[] steps = in.length > 4 && in[4] != null ? in[4].l() : null;
            if (starts == null || ends == null) {
                throw new Unsupported("Slice without starts/ends");
            }
            int r = a.shape.length;
            int[] st = new int[r];
            int[] en = a.shape.clone();
            int[] sp = new int[r];
            Arrays.fill(sp, 1);
            for (int i = 0; i < starts.length; i++) {
                int ax = axes == null ? i : (int) (axes[i] < 0 ? axes[i] + r : axes[i]);
                long step = steps == null ? 1 : steps[i];
                if (step == 0) {
                    throw new IllegalArgumentException("Slice step 0");
                }
                long d = a.shape[ax];
                long s = starts[i] < 0 ? starts[i] + d : starts[i];
                long e = ends[i] < 0 ? ends[i] + d : ends[i];
                if (step > 0) {
                    s = Math.max(0, Math.min(d, s));
                    e = Math.max(0, Math.min(d, e));
                } else {
                    s = Math.max(-1, Math.min(d - 1, s));
                    e = Math.max(-1, Math.min(d - 1, e));
                }
                st[ax] = (int) s;
                en[ax] = (int) e;
                sp[ax] = (int) step;
            }
            T cur = a;
            for (int ax = 0; ax < r; ax++) {
                if (st[ax] != 0 || en[ax] != a.shape[ax] || sp[ax] != 1) {
                    cur = sliceAxis(cur, ax, st[ax], en[ax], sp[ax]);
                }
            }
            return new T[] {cur};
        };
    }

    /** Elements start, start+step, ... (before end) along {@code axis}. */
    static T sliceAxis(T a, int axis, int start, int end, int step) {
        int r = a.shape.length;
        int cnt = step > 0 ? Math.max(0, (end - start + step - 1) / step) : Math.max(0, (start - end - step - 1) / -step);
        int[] s = a.shape.clone();
        s[axis] = cnt;
        int outer = 1;
        for (int i = 0; i < axis; i++) {
            outer *= a.shape[i];
        }
        int inner = 1;
        for (int i = axis + 1; i < r; i++) {
            inner *= a.shape[i];
        }
        int dim = a.shape[axis];
        int n = size(s);
        if (a.isFloat()) {
            float[] x = a.f();
            float[] out = new float[n];
            int o = 0;
            for (int b = 0; b < outer; b++) {
                for (int c = 0, i = start; c < cnt; c++, i += step) {
                    System.arraycopy(x, (b * dim + i) * inner, out, o, inner);
                    o += inner;
                }
            }
            return T.floats(s, out);
        }
        long[] x = a.l();
        long[] out = new long[n];
        int o = 0;
        for (int b = 0; b < outer; b++) {
            for (int c = 0, i = start; c < cnt; c++, i += step) {
                System.arraycopy(x, (b * dim + i) * inner, out, o, inner);
                o += inner;
            }
        }
        return T.longs(a.type, s, out);
    }

    static T gather(T data, T indices, long axisAttr) {
        int r = data.shape.length;
        int axis = (int) (axisAttr < 0 ? axisAttr + r : axisAttr);
        long[] idx = indices.l();
        int[] s = new int[r - 1 + indices.shape.length];
        int k = 0;
        for (int i = 0; i < axis; i++) {
            s[k++] = data.shape[i];
        }
        for (int d : indices.shape) {
            s[k++] = d;
        }
        for (int i = axis + 1; i < r; i++) {
            s[k++] = data.shape[i];
        }
        int outer = 1;
        for (int i = 0; i < axis; i++) {
            outer *= data.shape[i];
        }
        int inner = 1;
        for (int i = axis + 1; i < r; i++) {
            inner *= data.shape[i];
        }
        int dim = data.shape[axis];
        int n = size(s);
        float[] rf = data.isFloat() ? new float[n] : null;
        long[] rl = data.isFloat() ? null : new long[n];
        int o = 0;
        for (int b = 0; b < outer; b++) {
            for (long ix : idx) {
                long j = ix < 0 ? ix + dim : ix;
                if (j < 0 || j >= dim) {
                    throw new IllegalArgumentException("Gather index " + ix + " outside [0, " + dim + ")");
                }
                long from = ((long) b * dim + j) * inner;
                if (rf != null) {
                    if (data.seg != null) {
                        MemorySegment.copy(data.seg, ValueLayout.JAVA_FLOAT_UNALIGNED, from * 4, rf, o, inner);
                    } else {
                        System.arraycopy(data.f, (int) from, rf, o, inner);
                    }
                } else {
                    System.arraycopy(data.l, (int) from, rl, o, inner);
                }
                o += inner;
            }
        }
        return rf != null ? T.floats(s, rf) : T.longs(data.type, s, rl);
    }

    static T expand(T a, int[] target) {
        int[] s = broadcastShape(a.shape, target);
        int[] idx = broadcastIndex(s, a.shape);
        return idx == null ? a : gathered(a, s, idx);
    }

    static T fill(int[] shape, T value) {
        int n = size(shape);
        if (value.isFloat()) {
            float[] r = new float[n];
            Arrays.fill(r, value.f()[0]);
            return T.floats(shape, r);
        }
        long[] r = new long[n];
        Arrays.fill(r, value.l()[0]);
        return T.longs(value.type, shape, r);
    }

    static T range(T start, T limit, T delta) {
        if (start.isFloat()) {
            float s = start.f()[0];
            float l = limit.f()[0];
            float d = delta.f()[0];
            int n = (int) Math.max(0, Math.ceil((l - s) / d));
            float[] r = new float[n];
            for (int i = 0; i < n; i++) {
                r[i] = s + i * d;
            }
            return T.floats(new int[] {n}, r);
        }
        long s = start.l()[0];
        long l = limit.l()[0];
        long d = delta.l()[0];
        if (d == 0) {
            throw new IllegalArgumentException("Range with delta 0");
        }
        int n = (int) Math.max(0, (l - s + d + (d > 0 ? -1 : 1)) / d);
        long[] r = new long[n];
        for (int i = 0; i < n; i++) {
            r[i] = s + i * d;
        }
        return T.longs(start.type, new int[] {n}, r);
    }

    private static Kernel reduce(Node n, long opset) {
        String op = n.op();
        long[] axesAttr = attrInts(n, "axes");
        boolean keep = attrInt(n, "keepdims", 1) != 0;
        boolean noop = attrInt(n, "noop_with_empty_axes", 0) != 0;
        return in -> {
            T a = in[0];
            long[] axes = in.length > 1 && in[1] != null ? in[1].l() : axesAttr;
            int r = a.shape.length;
            boolean[] red = new boolean[r];
            if (axes == null || axes.length == 0) {
                if (noop) {
                    return new T[] {a};
                }
                Arrays.fill(red, true);
            } else {
                for (long ax : axes) {
                    red[(int) (ax < 0 ? ax + r : ax)] = true;
                }
            }
            return new T[] {reduceAxes(op, a, red, keep)};
        };
    }

    static T reduceAxes(String op, T a, boolean[] red, boolean keep) {
        int r = a.shape.length;
        int[] out = new int[r];
        List<Integer> kept = new ArrayList<>();
        int count = 1;
        for (int i = 0; i < r; i++) {
            out[i] = red[i] ? 1 : a.shape[i];
            if (red[i]) {
                count *= a.shape[i];
            } else {
                kept.add(a.shape[i]);
            }
        }
        int[] idx = broadcastIndex(a.shape, out); // each input element's output element
        int n = size(out);
        float[] x = a.f();
        double[] acc = new double[n];
        if (op.equals("ReduceMax")) {
            Arrays.fill(acc, Double.NEGATIVE_INFINITY);
        }
        for (int e = 0; e < x.length; e++) {
            int o = idx == null ? e : idx[e];
            acc[o] = op.equals("ReduceMax") ? Math.max(acc[o], x[e]) : acc[o] + x[e];
        }
        float[] res = new float[n];
        for (int i = 0; i < n; i++) {
            res[i] = (float) (op.equals("ReduceMean") ? acc[i] / count : acc[i]);
        }
        int[] shape = keep ? out : kept.stream().mapToInt(Integer::intValue).toArray();
        return T.floats(shape, res);
    }

    /**
     * MatMul with numpy semantics. A 2-D right operand (a weight) goes through {@link GemvOps}:
     * each row of the left operand times it; everything else (small products of activations) is
     * a plain loop.
     */
    static T matmul(T a, T b) {
        return matmul(a, b, Parallel.INLINE);
    }

    /**
     * As {@link #matmul(T, T)}; a one-row product with a weight of at least {@link #SPLIT_MACS}
     * multiply-adds is computed in up to {@link #CHUNKS} column chunks by {@code par} (the same chunks to the
     * same thread from call to call while both run, so each keeps streaming the same part of the
     * weights).
     */
    static T matmul(T a, T b, Parallel par) {
        if (!a.isFloat() || !b.isFloat()) {
            throw new Unsupported("MatMul of integer tensors");
        }
        int[] as = a.shape.length == 1 ? new int[] {1, a.shape[0]} : a.shape;
        int[] bs = b.shape.length == 1 ? new int[] {b.shape[0], 1} : b.shape;
        int kn = as[as.length - 1];
        if (bs[bs.length - 2] != kn) {
            throw new IllegalArgumentException("MatMul of " + Arrays.toString(a.shape) + " and " + Arrays.toString(b.shape));
        }
        int m = as[as.length - 2];
        int nn = bs[bs.length - 1];
        int[] batch = broadcastShape(Arrays.copyOf(as, as.length - 2), Arrays.copyOf(bs, bs.length - 2));
        int[] outShape = Arrays.copyOf(batch, batch.length + 2);
        outShape[batch.length] = m;
        outShape[batch.length + 1] = nn;
        float[] y = new float[size(outShape)];
        float[] x = a.f();
        if (bs.length == 2) {
            MemorySegment w = b.seg != null ? b.seg : heapWeight(b);
            GemvOps g = GemvOps.get();
            int rows = x.length / kn;
            if (rows == 1 && (long) kn * nn >= SPLIT_MACS && nn >= 128) {
                // column chunks of whole 64-column blocks (CHUNKS, default 2: a half per thread)
                int blocks = (nn + 63) / 64;
                int chunks = Math.min(CHUNKS, blocks);
                par.split(chunks, c -> g.gemv(x, 0, kn, w, 0, nn, y, 0, Math.min(nn, c * blocks / chunks * 64),
                        Math.min(nn, (c + 1) * blocks / chunks * 64)));
            } else {
                for (int row = 0; row < rows; row++) {
                    g.gemv(x, row * kn, kn, w, 0, nn, y, row * nn, 0, nn);
                }
            }
        } else {
            float[] bf = b.f();
            int[] ia = broadcastIndex(batch, Arrays.copyOf(as, as.length - 2));
            int[] ib = broadcastIndex(batch, Arrays.copyOf(bs, bs.length - 2));
            int nb = size(batch);
            for (int bi = 0; bi < nb; bi++) {
                int ao = (ia == null ? bi : ia[bi]) * m * kn;
                int bo = (ib == null ? bi : ib[bi]) * kn * nn;
                for (int i = 0; i < m; i++) {
                    for (int j = 0; j < nn; j++) {
                        float s = 0f;
                        for (int k = 0; k < kn; k++) {
                            s = Math.fma(x[ao + i * kn + k], bf[bo + k * nn + j], s);
                        }
                        y[(bi * m + i) * nn + j] = s;
                    }
                }
            }
        }
        int[] shape = outShape;
        if (a.shape.length == 1 && b.shape.length == 1) {
            shape = new int[0];
        } else if (a.shape.length == 1) {
            shape = squeezeAt(outShape, outShape.length - 2);
        } else if (b.shape.length == 1) {
            shape = squeezeAt(outShape, outShape.length - 1);
        }
        return T.floats(shape, y);
    }

    private static int[] squeezeAt(int[] s, int at) {
        int[] r = new int[s.length - 1];
        for (int i = 0, j = 0; i < s.length; i++) {
            if (i != at) {
                r[j++] = s[i];
            }
        }
        return r;
    }

    /** A 2-D fp32 operand held on the heap, as native memory for the Vector API (made per call: activations are small). */
    private static MemorySegment heapWeight(T b) {
        float[] f = b.f();
        MemorySegment s = Arena.ofAuto().allocate(4L * f.length, 64);
        MemorySegment.copy(f, 0, s, ValueLayout.JAVA_FLOAT, 0, f.length);
        return s;
    }

    static T softmax(T a, int axis) {
        if (axis != a.shape.length - 1) {
            throw new Unsupported("Softmax over axis " + axis + " of a rank-" + a.shape.length + " tensor (only the last)");
        }
        int d = a.shape[axis];
        float[] x = a.f();
        float[] r = new float[x.length];
        for (int o = 0; o < x.length; o += d) {
            float mx = Float.NEGATIVE_INFINITY;
            for (int i = 0; i < d; i++) {
                mx = Math.max(mx, x[o + i]);
            }
            double sum = 0;
            for (int i = 0; i < d; i++) {
                r[o + i] = (float) Math.exp(x[o + i] - mx);
                sum += r[o + i];
            }
            for (int i = 0; i < d; i++) {
                r[o + i] = (float) (r[o + i] / sum);
            }
        }
        return T.floats(a.shape, r);
    }

    static T layerNorm(T x, T scale, T bias, long axisAttr, float eps) {
        int r = x.shape.length;
        int axis = (int) (axisAttr < 0 ? axisAttr + r : axisAttr);
        int inner = 1;
        for (int i = axis; i < r; i++) {
            inner *= x.shape[i];
        }
        float[] v = x.f();
        float[] g = scale.f();
        float[] b = bias == null ? null : bias.f();
        if (g.length != inner || b != null && b.length != inner) {
            throw new Unsupported("LayerNormalization with a broadcast scale or bias");
        }
        float[] out = new float[v.length];
        for (int o = 0; o < v.length; o += inner) {
            double mean = 0;
            for (int i = 0; i < inner; i++) {
                mean += v[o + i];
            }
            mean /= inner;
            double var = 0;
            for (int i = 0; i < inner; i++) {
                double dlt = v[o + i] - mean;
                var += dlt * dlt;
            }
            var /= inner;
            double inv = 1 / Math.sqrt(var + eps);
            for (int i = 0; i < inner; i++) {
                out[o + i] = (float) ((v[o + i] - mean) * inv * g[i] + (b == null ? 0 : b[i]));
            }
        }
        return T.floats(x.shape, out);
    }
}
