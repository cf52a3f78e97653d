package io.kvquant.demo.graph;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * An ONNX model read into a node list over {@link Pb} messages, for graph analysis and
 * rewriting in Java. Field numbers are those of the ONNX schema (onnx.proto):
 * ModelProto.graph = 7; GraphProto node = 1, initializer = 5, input = 11, output = 12,
 * value_info = 13; NodeProto input = 1, output = 2, name = 3, op_type = 4, attribute = 5,
 * domain = 7; TensorProto dims = 1, data_type = 2, float_data = 4, int64_data = 7, name = 8,
 * raw_data = 9; ValueInfoProto name = 1, type = 2; AttributeProto name = 1, f = 2, i = 3, t = 5.
 */
public final class OnnxModel {

    /** ONNX TensorProto.DataType values used here. */
    public static final int FLOAT = 1;
    public static final int INT32 = 6;
    public static final int INT64 = 7;
    public static final int BOOL = 9;
    public static final int FLOAT16 = 10;
    public static final int BFLOAT16 = 16;

    /** A node: its message and the fields analysis needs. */
    public record Node(int index, Pb raw, List<String> inputs, List<String> outputs, String op, String domain, String name) {
        public Pb.Field attribute(String attr) {
            for (Pb.Field f : raw.all(5)) {
                Pb a = f.message();
                if (attr.equals(a.string(1, ""))) {
                    return f;
                }
            }
            return null;
        }
    }

    /** The ModelProto's fields other than the graph (IR version, opsets, producer, metadata). */
    public final Pb model;
    /** The GraphProto, initializers as {@link #tensorReference} made them. */
    public final Pb graph;
    public final List<Node> nodes = new ArrayList<>();
    /** Initializers by name: TensorProto bytes, large data as a reference to where it lies. */
    public final Map<String, byte[]> initializers = new LinkedHashMap<>();
    /** Graph inputs and outputs, value infos: name to raw ValueInfoProto bytes. */
    public final Map<String, byte[]> inputs = new LinkedHashMap<>();
    public final Map<String, byte[]> outputs = new LinkedHashMap<>();
    public final Map<String, byte[]> valueInfo = new HashMap<>();
    public final Map<String, Node> producer = new HashMap<>();
    public final Map<String, List<Node>> consumers = new HashMap<>();

    /** An initializer's raw data at least this long is referenced where it lies, never copied. */
    static final int REFERENCE_BYTES = 1024;

    /** The file read; initializers with large data point into it (or into its external data files). */
    public final Path file;

    private OnnxModel(Path file, ByteBuffer buf) {
        this.file = file;
        Pb header = new Pb();
        Pb graph = null;
        Wire top = new Wire(buf, 0, buf.limit());
        while (top.more()) {
            int at = top.pos;
            Pb.Field f = top.next(false);
            if (f.number() == 7 && f.wireType() == 2) {
                graph = new Pb();
                Wire g = new Wire(buf, top.lenStart, top.pos);
                while (g.more()) {
                    Pb.Field gf = g.next(false);
                    if (gf.number() == 5 && gf.wireType() == 2) {
                        graph.fields.add(new Pb.Field(5, 2, 0, tensorReference(buf, g.lenStart, g.pos)));
                    } else {
                        graph.fields.add(gf.bytes() == null && gf.wireType() == 2 ? copy(buf, g, gf) : gf);
                    }
                }
            } else {
                header.fields.add(f.bytes() == null && f.wireType() == 2 ? copy(buf, top, f) : f);
            }
            if (top.pos <= at) {
                throw new IllegalArgumentException("malformed protobuf at byte " + at);
            }
        }
        if (graph == null) {
            throw new IllegalArgumentException("the ONNX model has no graph");
        }
        this.model = header;
        this.graph = graph;
        for (Pb.Field f : graph.fields) {
            switch (f.number()) {
                case 1 -> {
                    Pb n = f.message();
                    Node node = new Node(nodes.size(), n, n.strings(1), n.strings(2), n.string(4, ""), n.string(7, ""),
                            n.string(3, ""));
                    nodes.add(node);
                }
                case 5 -> initializers.put(Pb.parse(f.bytes()).string(8, ""), f.bytes());
                case 11 -> inputs.put(Pb.parse(f.bytes()).string(1, ""), f.bytes());
                case 12 -> outputs.put(Pb.parse(f.bytes()).string(1, ""), f.bytes());
                case 13 -> valueInfo.put(Pb.parse(f.bytes()).string(1, ""), f.bytes());
                default -> {
                }
            }
        }
        for (Node n : nodes) {
            for (String o : n.outputs()) {
                if (!o.isEmpty()) {
                    producer.put(o, n);
                }
            }
            for (String i : n.inputs()) {
                if (!i.isEmpty()) {
                    consumers.computeIfAbsent(i, k -> new ArrayList<>()).add(n);
                }
            }
        }
    }

    private static Pb.Field copy(ByteBuffer buf, Wire w, Pb.Field f) {
        byte[] b = new byte[w.pos - w.lenStart];
        buf.get(w.lenStart, b);
        return new Pb.Field(f.number(), 2, 0, b);
    }

    /**
     * A TensorProto (bytes [from, to) of the mapped file) as it will be written into prepared
     * pieces: small data copied; raw_data (field 9) of {@value #REFERENCE_BYTES} bytes or more
     * replaced by an external-data reference (data_location = 14: EXTERNAL; external_data = 13:
     * location, offset, length) to where it lies in this file; an existing external reference
     * made absolute, so that pieces written anywhere find the weights.
     */
    private byte[] tensorReference(ByteBuffer buf, int from, int to) {
        Pb t = new Pb();
        Wire w = new Wire(buf, from, to);
        long rawAt = -1;
        long rawLen = 0;
        boolean external = false;
        List<Pb.Field> ext = new ArrayList<>();
        while (w.more()) {
            Pb.Field f = w.next(true);
            if (f.number() == 9 && f.wireType() == 2 && w.pos - w.lenStart >= REFERENCE_BYTES) {
                rawAt = w.lenStart;
                rawLen = w.pos - w.lenStart;
            } else if (f.number() == 13 && f.wireType() == 2) {
                ext.add(copy(buf, w, f));
            } else if (f.number() == 14) {
                external = f.bits() == 1;
            } else {
                t.fields.add(f.bytes() == null && f.wireType() == 2 ? copy(buf, w, f) : f);
            }
        }
        if (rawAt >= 0) {
            t.addVarint(14, 1);
            t.add(13, entry("location", file.toAbsolutePath().toString()));
            t.add(13, entry("offset", Long.toString(rawAt)));
            t.add(13, entry("length", Long.toString(rawLen)));
        } else if (external) {
            t.addVarint(14, 1);
            for (Pb.Field e : ext) {
                Pb kv = e.message();
                if (kv.string(1, "").equals("location")) {
                    Path loc = file.toAbsolutePath().getParent().resolve(kv.string(2, ""));
                    if (!java.nio.file.Files.isRegularFile(loc)) {
                        throw new IllegalArgumentException("initializer " + t.string(8, "?") + " has its data in " + loc
                                + ", which does not exist");
                    }
                    t.add(13, entry("location", loc.toString()));
                } else {
                    t.fields.add(e);
                }
            }
        } else {
            t.fields.addAll(ext);
        }
        return t.toBytes();
    }

    /**
     * Writes a model made by {@link #subModel} (or any model whose external data locations are
     * absolute, as {@link #read} makes them) to {@code target}: ONNX Runtime accepts only locations
     * relative to the model's folder and inside it, so each data file is linked into that folder
     * (a hard link; ONNX Runtime refuses symbolic links leading out of the folder, so on another
     * file system the file is copied once, with a warning) as {@link #linkName} and the locations
     * rewritten to those names. Returns the links used, each with the file it stands for.
     */
    public static Map<Path, Path> writeLinked(byte[] modelBytes, Path target) throws IOException {
        Pb m = Pb.parse(modelBytes);
        Pb g = m.one(7).message();
        Map<String, String> names = new LinkedHashMap<>();
        Map<Path, Path> links = new LinkedHashMap<>();
        List<Pb.Field> fields = new ArrayList<>();
        for (Pb.Field f : g.fields) {
            if (f.number() != 5) {
                fields.add(f);
                continue;
            }
            Pb t = f.message();
            if (t.varint(14, 0) != 1) {
                fields.add(f);
                continue;
            }
            Pb r = new Pb();
            for (Pb.Field tf : t.fields) {
                Pb kv = tf.number() == 13 ? tf.message() : null;
                if (kv != null && kv.string(1, "").equals("location") && Path.of(kv.string(2, "")).isAbsolute()) {
                    String loc = kv.string(2, "");
                    String name = names.get(loc);
                    if (name == null) {
                        name = linkName(Path.of(loc));
                        names.put(loc, name);
                        Path link = target.resolveSibling(name);
                        if (!Files.exists(link) || !Files.isSameFile(link, Path.of(loc))) {
                            Files.deleteIfExists(link);
                            try {
                                Files.createLink(link, Path.of(loc));
                            } catch (IOException | UnsupportedOperationException e) {
                                // ONNX Runtime resolves symbolic links and refuses those leading out of the folder
                                System.err.println("kvquant: cannot hard-link " + loc + " into " + link.getParent()
                                        + " (another file system?); copying it once (" + Files.size(Path.of(loc))
                                        + " bytes)");
                                Files.copy(Path.of(loc), link);
                            }
                        }
                        links.put(link, Path.of(loc));
                    }
                    r.add(13, entry("location", name));
                } else {
                    r.fields.add(tf);
                }
            }
            fields.add(new Pb.Field(5, 2, 0, r.toBytes()));
        }
        Pb out = m.without(7);
        out.add(7, new Pb(fields));
        Files.write(target, out.toBytes());
        return links;
    }

    /**
     * A model made by {@link #subModel} with its referenced initializer data read back inline
     * (raw_data), for small models run from memory (the mask probe); refused over {@code maxBytes}.
     */
    public static byte[] inlined(byte[] modelBytes, long maxBytes) throws IOException {
        Pb m = Pb.parse(modelBytes);
        Pb g = m.one(7).message();
        List<Pb.Field> fields = new ArrayList<>();
        long total = 0;
        for (Pb.Field f : g.fields) {
            if (f.number() != 5 || f.message().varint(14, 0) != 1) {
                fields.add(f);
                continue;
            }
            Pb t = f.message();
            ExternalData x = ExternalData.of(t);
            String loc = x.location();
            long off = x.offset();
            long len = x.length();
            Pb r = new Pb();
            for (Pb.Field tf : t.fields) {
                if (tf.number() != 13 && tf.number() != 14) {
                    r.fields.add(tf);
                }
            }
            if (loc == null || !Path.of(loc).isAbsolute()) {
                throw new IllegalArgumentException("initializer " + t.string(8, "?") + ": external data without an absolute "
                        + "location");
            }
            if (len < 0) {
                len = Files.size(Path.of(loc)) - off;
            }
            total += len;
            if (total > maxBytes) {
                throw new IllegalArgumentException("the part of the graph to run from memory needs over " + maxBytes
                        + " bytes of weights");
            }
            byte[] raw = new byte[(int) len];
            try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(Path.of(loc))) {
                ByteBuffer b = ByteBuffer.wrap(raw);
                while (b.hasRemaining() && ch.read(b, off + b.position()) > 0) {
                    // reading
                }
            }
            r.add(9, raw);
            fields.add(new Pb.Field(5, 2, 0, r.toBytes()));
        }
        Pb out = m.without(7);
        out.add(7, new Pb(fields));
        return out.toBytes();
    }

    /** The name under which a data file is linked into a preparation: stable for one source file. */
    static String linkName(Path source) {
        return "weights-" + Integer.toHexString(source.toAbsolutePath().normalize().toString().hashCode()) + "-"
                + source.getFileName();
    }

    private static Pb entry(String key, String value) {
        return new Pb().add(1, key).add(2, value);
    }

    /**
     * Reads an ONNX file without loading it whole: the file is memory-mapped and walked field by
     * field; nodes, inputs and outputs are copied (small), initializers' large raw data is not
     * (see {@link #tensorReference}). Weights in external data files stay there.
     */
    public static OnnxModel read(Path file) throws IOException {
        long size = Files.size(file);
        if (size > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(file + " is over 2 GB, which a protobuf file cannot be: export the weights "
                    + "as external data (model.onnx + model.onnx.data)");
        }
        try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(file)) {
            ByteBuffer buf = ch.map(java.nio.channels.FileChannel.MapMode.READ_ONLY, 0, size);
            return new OnnxModel(file.toAbsolutePath(), buf);
        } catch (IllegalArgumentException | IndexOutOfBoundsException | java.nio.BufferUnderflowException e) {
            throw new IllegalArgumentException(file + " is not a readable ONNX model: " + e.getMessage(), e);
        }
    }

    /** A protobuf wire reader over a buffer; length-delimited values are not copied unless asked. */
    private static final class Wire {
        final ByteBuffer buf;
        int pos;
        final int end;
        /** Start of the last length-delimited value read; it ends at {@link #pos}. */
        int lenStart;

        Wire(ByteBuffer buf, int from, int to) {
            this.buf = buf;
            this.pos = from;
            this.end = to;
        }

        boolean more() {
            return pos < end;
        }

        long varint() {
            long r = 0;
            for (int shift = 0; shift < 64; shift += 7) {
                byte b = buf.get(pos++);
                r |= (long) (b & 0x7f) << shift;
                if (b >= 0) {
                    return r;
                }
            }
            throw new IllegalArgumentException("malformed varint at byte " + pos);
        }

        /** The next field; bytes are copied only when {@code copySmall} and under the reference size. */
        Pb.Field next(boolean copySmall) {
            long tag = varint();
            int number = (int) (tag >>> 3);
            int wt = (int) (tag & 7);
            switch (wt) {
                case 0 -> {
                    return new Pb.Field(number, wt, varint(), null);
                }
                case 1 -> {
                    long v = buf.order(ByteOrder.LITTLE_ENDIAN).getLong(pos);
                    pos += 8;
                    return new Pb.Field(number, wt, v, null);
                }
                case 5 -> {
                    long v = buf.order(ByteOrder.LITTLE_ENDIAN).getInt(pos) & 0xffffffffL;
                    pos += 4;
                    return new Pb.Field(number, wt, v, null);
                }
                case 2 -> {
                    long len = varint();
                    if (len < 0 || pos + len > end) {
                        throw new IllegalArgumentException("field " + number + " runs past its message");
                    }
                    lenStart = pos;
                    pos += (int) len;
                    if (copySmall && len < REFERENCE_BYTES) {
                        byte[] b = new byte[(int) len];
                        buf.get(lenStart, b);
                        return new Pb.Field(number, wt, 0, b);
                    }
                    return new Pb.Field(number, wt, 0, null);
                }
                default -> throw new IllegalArgumentException("unsupported protobuf wire type " + wt + " (field " + number
                        + ")");
            }
        }
    }

    public List<Node> consumersOf(String tensor) {
        return consumers.getOrDefault(tensor, List.of());
    }

    /** The element type of a tensor: declared (inputs, outputs, value_info, initializers) or inferred from its producer. */
    public int elemType(String tensor) {
        return elemType(tensor, new HashMap<>(), 0);
    }

    private int elemType(String t, Map<String, Integer> memo, int depth) {
        Integer m = memo.get(t);
        if (m != null) {
            return m;
        }
        int r = declaredType(t);
        if (r == 0 && depth < 10_000) {
            Node p = producer.get(t);
            if (p != null) {
                r = switch (p.op()) {
                    case "Cast" -> (int) p.attribute("to").message().varint(3, 0);
                    case "Shape", "Size", "NonZero", "ArgMax", "ArgMin" -> INT64;
                    case "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN",
                         "IsInf" -> BOOL;
                    case "Constant" -> {
                        Pb.Field v = p.attribute("value");
                        yield v == null ? 0 : (int) v.message().one(5).message().varint(2, 0);
                    }
                    case "Where" -> elemType(p.inputs().get(1), memo, depth + 1);
                    case "ConstantOfShape" -> {
                        Pb.Field v = p.attribute("value");
                        yield v == null ? FLOAT : (int) v.message().one(5).message().varint(2, 0);
                    }
                    default -> p.inputs().isEmpty() ? 0 : elemType(p.inputs().get(0), memo, depth + 1);
                };
            }
        }
        memo.put(t, r);
        return r;
    }

    /**
     * The declared shape of a graph input (TypeProto.tensor_type.shape.dim: dim_value = 1,
     * dim_param = 2); a symbolic or missing dimension is -3.
     */
    public long[] inputShape(String name) {
        byte[] vi = inputs.get(name);
        if (vi == null) {
            throw new IllegalArgumentException("the model has no input " + name);
        }
        Pb.Field type = Pb.parse(vi).one(2);
        Pb.Field tt = type == null ? null : type.message().one(1);
        Pb.Field shape = tt == null ? null : tt.message().one(2);
        if (shape == null) {
            throw new IllegalArgumentException("input " + name + " declares no shape");
        }
        List<Pb.Field> dims = shape.message().all(1);
        long[] r = new long[dims.size()];
        for (int k = 0; k < r.length; k++) {
            Pb d = dims.get(k).message();
            r[k] = d.one(1) != null ? d.varint(1, 0) : -3;
        }
        return r;
    }

    private int declaredType(String t) {
        byte[] vi = inputs.get(t);
        if (vi == null) {
            vi = outputs.get(t);
        }
        if (vi == null) {
            vi = valueInfo.get(t);
        }
        if (vi != null) {
            Pb.Field type = Pb.parse(vi).one(2);
            if (type != null && type.message().one(1) != null) {
                return (int) type.message().one(1).message().varint(1, 0);
            }
        }
        byte[] init = initializers.get(t);
        return init == null ? 0 : (int) Pb.parse(init).varint(2, 0);
    }

    /**
     * The value of a scalar float constant (an initializer or a Constant node's output, fp32 or
     * fp16 or double), or NaN when the tensor is not such a constant.
     */
    public double scalar(String t) {
        byte[] init = initializers.get(t);
        Pb tensor = null;
        if (init != null) {
            tensor = Pb.parse(init);
        } else {
            Node p = producer.get(t);
            if (p != null && p.op().equals("Constant") && p.attribute("value") != null) {
                tensor = p.attribute("value").message().one(5).message();
            }
        }
        if (tensor == null) {
            return Double.NaN;
        }
        long n = 1;
        for (Pb.Field d : tensor.all(1)) {
            n *= d.bits();
        }
        if (n != 1) {
            return Double.NaN;
        }
        int type = (int) tensor.varint(2, 0);
        Pb.Field raw = tensor.one(9);
        if (raw != null) {
            ByteBuffer b = ByteBuffer.wrap(raw.bytes()).order(ByteOrder.LITTLE_ENDIAN);
            return switch (type) {
                case FLOAT -> b.getFloat();
                case 11 -> b.getDouble();
                case FLOAT16 -> Float.float16ToFloat(b.getShort());
                case BFLOAT16 -> Float.intBitsToFloat(b.getShort() << 16);
                case BOOL -> b.get();
                default -> Double.NaN;
            };
        }
        Pb.Field fd = tensor.one(4);
        if (type == FLOAT && fd != null) {
            if (fd.wireType() == 5) {
                return Float.intBitsToFloat((int) fd.bits());
            }
            return ByteBuffer.wrap(fd.bytes()).order(ByteOrder.LITTLE_ENDIAN).getFloat();
        }
        return Double.NaN;
    }

    /** An initializer's dims. */
    public long[] dims(String name) {
        Pb t = Pb.parse(initializers.get(name));
        List<Pb.Field> d = t.all(1);
        long[] r = new long[d.size()];
        for (int k = 0; k < r.length; k++) {
            r[k] = d.get(k).bits();
        }
        return r;
    }

    /**
     * An fp32/fp16/bf16 initializer's values as floats, wherever its data lies (inline raw_data
     * or float_data, or an external reference as {@link #read} made it).
     */
    public float[] floats(String name) throws IOException {
        byte[] init = initializers.get(name);
        if (init == null) {
            throw new IllegalArgumentException(name + " is not an initializer");
        }
        Pb t = Pb.parse(init);
        int type = (int) t.varint(2, 0);
        long n = 1;
        for (long d : dims(name)) {
            n *= d;
        }
        byte[] raw;
        if (t.varint(14, 0) == 1) {
            ExternalData x = ExternalData.of(t);
            String loc = x.location();
            long off = x.offset();
            long len = x.length();
            int width = type == FLOAT ? 4 : 2;
            raw = new byte[(int) (len >= 0 ? len : n * width)];
            try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(Path.of(loc))) {
                ByteBuffer b = ByteBuffer.wrap(raw);
                while (b.hasRemaining() && ch.read(b, off + b.position()) > 0) {
                    // reading
                }
            }
        } else if (t.one(9) != null) {
            raw = t.one(9).bytes();
        } else if (type == FLOAT) {
            float[] r = new float[(int) n];
            int k = 0;
            for (Pb.Field f : t.all(4)) {
                if (f.wireType() == 5) {
                    r[k++] = Float.intBitsToFloat((int) f.bits());
                } else {
                    ByteBuffer b = ByteBuffer.wrap(f.bytes()).order(ByteOrder.LITTLE_ENDIAN);
                    while (b.hasRemaining()) {
                        r[k++] = b.getFloat();
                    }
                }
            }
            return r;
        } else {
            throw new IllegalArgumentException(name + ": unsupported tensor storage");
        }
        ByteBuffer b = ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN);
        float[] r = new float[(int) n];
        for (int k = 0; k < n; k++) {
            r[k] = switch (type) {
                case FLOAT -> b.getFloat();
                case FLOAT16 -> Float.float16ToFloat(b.getShort());
                case BFLOAT16 -> Float.intBitsToFloat(b.getShort() << 16);
                default -> throw new IllegalArgumentException(name + " has element type " + type + ", not a float type");
            };
        }
        return r;
    }

    /**
     * A TensorProto's external data entries (field 13): location (null when absent), offset (0
     * when absent) and length (-1 when absent: to the tensor's size).
     */
    public record ExternalData(String location, long offset, long length) {

        public static ExternalData of(Pb tensor) {
            String loc = null;
            long off = 0;
            long len = -1;
            for (Pb.Field f : tensor.all(13)) {
                Pb kv = f.message();
                switch (kv.string(1, "")) {
                    case "location" -> loc = kv.string(2, "");
                    case "offset" -> off = Long.parseLong(kv.string(2, "0"));
                    case "length" -> len = Long.parseLong(kv.string(2, "-1"));
                    default -> {
                    }
                }
            }
            return new ExternalData(loc, off, len);
        }
    }

    /** A ValueInfoProto declaring {@code name} with an element type and an unknown shape. */
    public static byte[] valueInfo(String name, int elemType) {
        Pb tensorType = new Pb().addVarint(1, elemType);
        Pb type = new Pb().add(1, tensorType);
        return new Pb().add(1, name).add(2, type).toBytes();
    }

    /**
     * A model with the same header (IR version, opsets, producer) whose graph holds {@code keep}
     * nodes (in original order), the initializers they use, and the given inputs and outputs.
     */
    public byte[] subModel(String graphName, Set<Node> keep, List<String> inNames, List<String> outNames) {
        Pb g = new Pb();
        List<Node> ordered = new ArrayList<>(keep);
        ordered.sort((a, b) -> Integer.compare(a.index(), b.index()));
        java.util.Set<String> used = new java.util.HashSet<>();
        for (Node n : ordered) {
            g.add(1, n.raw());
            used.addAll(n.inputs());
            // attributes may hold subgraphs that use outer initializers; not supported beyond direct inputs
        }
        g.add(2, graphName);
        for (Map.Entry<String, byte[]> e : initializers.entrySet()) {
            if (used.contains(e.getKey())) {
                g.add(5, e.getValue());
            }
        }
        for (String in : inNames) {
            byte[] vi = inputs.containsKey(in) ? inputs.get(in) : valueInfo.containsKey(in) ? valueInfo.get(in)
                    : valueInfo(in, elemType(in));
            g.add(11, vi);
        }
        for (String out : outNames) {
            byte[] vi = outputs.containsKey(out) ? outputs.get(out) : valueInfo.containsKey(out) ? valueInfo.get(out)
                    : valueInfo(out, elemType(out));
            g.add(12, vi);
        }
        Pb m = model.without(7);
        m.add(7, g);
        return m.toBytes();
    }
}
