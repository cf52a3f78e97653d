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

    public final Pb model;
    public final Pb graph;
    public final List<Node> nodes = new ArrayList<>();
    /** Initializers by name (raw TensorProto bytes). */
    public final Map<String, byte[]> initializers = new LinkedHashMap<>();
    /** Graph inputs and outputs, value infos: name to raw ValueInfoProto bytes. */
    public final Map<String, byte[]> inputs = new LinkedHashMap<>();
    public final Map<String, byte[]> outputs = new LinkedHashMap<>();
    public final Map<String, byte[]> valueInfo = new HashMap<>();
    public final Map<String, Node> producer = new HashMap<>();
    public final Map<String, List<Node>> consumers = new HashMap<>();

    private OnnxModel(Pb model) {
        this.model = model;
        Pb.Field g = model.one(7);
        if (g == null) {
            throw new IllegalArgumentException("the ONNX model has no graph");
        }
        this.graph = g.message();
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

    public static OnnxModel read(Path file) throws IOException {
        if (Files.size(file) > Integer.MAX_VALUE - 64) {
            throw new IllegalArgumentException(file + " is over 2 GB; models with external data are not supported here");
        }
        try {
            return new OnnxModel(Pb.parse(Files.readAllBytes(file)));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(file + " is not a readable ONNX model: " + e.getMessage(), e);
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
