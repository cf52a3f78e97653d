package io.kvquant.demo.graph;

import io.kvquant.demo.graph.OnnxModel.Node;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The decode-step form of the engine's pieces. During one decode step every piece sees one
 * token: batch 1, sequence 1, and the attention outputs Java hands back are [1, heads, 1, d] (or
 * [1, 1, heads x d]). The general pieces cannot know that: their inputs are declared without
 * shapes, and each layer piece's first Reshape takes its target shape from a tensor computed
 * in the previous piece, so ONNX Runtime recomputes the same shapes (Shape, Gather, Unsqueeze,
 * Concat, ...) on every step. A decode piece declares its inputs' static shapes and takes the
 * shape tensors that cross from earlier pieces as constants, so ONNX Runtime folds the shape
 * plumbing away when it loads it.
 *
 * <p>Which crossing tensors are constant during a decode step is proved, not guessed:
 * {@link #analyse} follows the pieces in order and marks each tensor {@link Fixed#SHAPE} when
 * its shape is the same in every decode step, {@link Fixed#VALUE} when its value is. The only
 * tensors whose shapes are known to start with are the graph inputs {@code input_ids} and
 * {@code position_ids} ([1, 1]) and the attention outputs; {@code attention_mask} and anything
 * else fed from outside are neither ([1, past + 1] grows). Ops whose output shape follows from
 * their inputs' shapes alone (with their shape-giving inputs constant) keep SHAPE; a {@code Shape}
 * of a tensor of fixed shape is a constant VALUE; ops with all inputs constant stay constant. Any
 * op not in the tables below (NonZero, control flow, random ops, other domains) is neither: its
 * outputs stay inputs of the decode piece, as in the general piece.
 */
public final class DecodePieces {

    /** What is the same in every decode step about a tensor. VALUE implies SHAPE. */
    public enum Fixed { NONE, SHAPE, VALUE }

    /** Output shape = a function of the input shapes (and attributes) only. */
    private static final Set<String> SHAPE_OPS = Set.of(
            // elementwise, unary
            "Identity", "Cast", "CastLike", "Neg", "Abs", "Sqrt", "Exp", "Log", "Reciprocal", "Sigmoid", "Tanh", "Relu",
            "Erf", "Cos", "Sin", "Not", "Floor", "Ceil", "Round", "Sign", "IsNaN", "IsInf", "LeakyRelu", "Elu",
            "HardSigmoid", "Softplus", "Softsign", "Gelu", "Mish", "Selu", "Celu", "HardSwish", "Softmax", "LogSoftmax",
            // elementwise with broadcasting
            "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And",
            "Or", "Xor", "Where", "Max", "Min", "Sum", "Mean", "PRelu", "BitShift",
            // shape by inputs' shapes and attributes
            "MatMul", "Gemm", "Transpose", "Concat", "Gather", "GatherElements", "Flatten", "LayerNormalization",
            "RMSNormalization", "ArgMax", "ArgMin", "DepthToSpace", "SpaceToDepth");

    /** Ops whose output shape also depends on the values of these inputs (0-based). */
    private static final Map<String, int[]> PARAM_OPS = Map.ofEntries(
            Map.entry("Reshape", new int[] {1}), Map.entry("Expand", new int[] {1}),
            Map.entry("Slice", new int[] {1, 2, 3, 4}), Map.entry("Unsqueeze", new int[] {1}),
            Map.entry("Squeeze", new int[] {1}), Map.entry("Tile", new int[] {1}), Map.entry("Split", new int[] {1}),
            Map.entry("Pad", new int[] {1, 2, 3}), Map.entry("TopK", new int[] {1}), Map.entry("Trilu", new int[] {1}),
            Map.entry("CumSum", new int[] {1}), Map.entry("ReduceMean", new int[] {1}), Map.entry("ReduceSum", new int[] {1}),
            Map.entry("ReduceMax", new int[] {1}), Map.entry("ReduceMin", new int[] {1}),
            Map.entry("ReduceProd", new int[] {1}), Map.entry("ReduceL2", new int[] {1}),
            Map.entry("ReduceSumSquare", new int[] {1}), Map.entry("ReduceLogSumExp", new int[] {1}),
            // every input gives the output's shape
            Map.entry("Range", new int[] {0, 1, 2}), Map.entry("ConstantOfShape", new int[] {0}));

    private DecodePieces() {
    }

    /**
     * Marks the tensors of {@code pieces} (in order; a later piece's inputs are earlier pieces'
     * outputs or come from outside). {@code shapeFixed}: inputs from outside whose shape is fixed
     * during a decode step (the token inputs, the attention outputs); every other outside input
     * is {@link Fixed#NONE}.
     */
    public static Map<String, Fixed> analyse(List<OnnxModel> pieces, Set<String> shapeFixed) {
        Map<String, Fixed> fixed = new HashMap<>();
        for (OnnxModel p : pieces) {
            for (String in : p.inputs.keySet()) {
                fixed.putIfAbsent(in, shapeFixed.contains(in) ? Fixed.SHAPE : Fixed.NONE);
            }
            for (String init : p.initializers.keySet()) {
                fixed.put(init, Fixed.VALUE);
            }
            for (Node n : p.nodes) {
                Fixed f = of(n, fixed);
                for (String o : n.outputs()) {
                    if (!o.isEmpty()) {
                        fixed.put(o, f);
                    }
                }
            }
        }
        return fixed;
    }

    /** What is fixed about node {@code n}'s outputs, given its inputs'. */
    public static Fixed of(Node n, Map<String, Fixed> fixed) {
        if (!n.domain().isEmpty() && !n.domain().equals("ai.onnx")) {
            return Fixed.NONE;
        }
        if (n.op().equals("Constant")) {
            return Fixed.VALUE;
        }
        boolean allValues = true;
        boolean allShapes = true;
        for (String in : n.inputs()) {
            Fixed f = in.isEmpty() ? Fixed.VALUE : fixed.getOrDefault(in, Fixed.NONE);
            allValues &= f == Fixed.VALUE;
            allShapes &= f != Fixed.NONE;
        }
        if (n.op().equals("Shape") || n.op().equals("Size")) {
            return allShapes ? Fixed.VALUE : Fixed.NONE;
        }
        boolean shape;
        if (SHAPE_OPS.contains(n.op())) {
            shape = allShapes;
        } else if (PARAM_OPS.containsKey(n.op())) {
            shape = allShapes;
            for (int k : PARAM_OPS.get(n.op())) {
                if (k < n.inputs().size() && !n.inputs().get(k).isEmpty()) {
                    shape &= fixed.getOrDefault(n.inputs().get(k), Fixed.NONE) == Fixed.VALUE;
                }
            }
        } else {
            return Fixed.NONE; // not known to have a shape that follows from its inputs' shapes
        }
        if (!shape) {
            return Fixed.NONE;
        }
        return allValues ? Fixed.VALUE : Fixed.SHAPE;
    }

    /**
     * The decode form of {@code piece} (read by {@link OnnxModel#read} from {@code folder}):
     * inputs in {@code constants} become initializers (TensorProto bytes), inputs in
     * {@code shapes} are declared with those static shapes, everything else is unchanged.
     * External data references into {@code folder} are written relative to it, so ONNX Runtime
     * reads the weights from the same files as the general piece (load the bytes with
     * {@code session.model_external_initializers_file_folder_path} set to {@code folder}).
     */
    public static byte[] specialise(OnnxModel piece, Path folder, Map<String, long[]> shapes,
                                    Map<String, byte[]> constants) {
        List<Pb.Field> fields = new ArrayList<>();
        for (Pb.Field f : piece.graph.fields) {
            switch (f.number()) {
                case 11 -> {
                    String name = Pb.parse(f.bytes()).string(1, "");
                    if (constants.containsKey(name)) {
                        continue;
                    }
                    long[] shape = shapes.get(name);
                    fields.add(shape == null ? f : new Pb.Field(11, 2, 0, DequantGraph.valueInfo(name, piece.elemType(name), java.util.Arrays.stream(shape).boxed().toArray())));
                }
                case 5 -> fields.add(new Pb.Field(5, 2, 0, relative(f.bytes(), folder)));
                default -> fields.add(f);
            }
        }
        for (byte[] c : constants.values()) {
            fields.add(new Pb.Field(5, 2, 0, c));
        }
        Pb m = piece.model.without(7);
        m.add(7, new Pb(fields));
        return m.toBytes();
    }

    /** A TensorProto: name, element type, dims and little-endian raw data. */
    public static byte[] tensor(String name, int elemType, long[] dims, byte[] raw) {
        Pb t = new Pb();
        for (long d : dims) {
            t.addVarint(1, d);
        }
        t.addVarint(2, elemType);
        t.add(8, name);
        t.add(9, raw);
        return t.toBytes();
    }

    /** An initializer with its external data location made relative to {@code folder}; refused if it lies elsewhere. */
    private static byte[] relative(byte[] tensor, Path folder) {
        Pb t = Pb.parse(tensor);
        if (t.varint(14, 0) != 1) {
            return tensor;
        }
        Pb r = new Pb();
        for (Pb.Field f : t.fields) {
            Pb kv = f.number() == 13 ? f.message() : null;
            if (kv != null && kv.string(1, "").equals("location")) {
                Path loc = Path.of(kv.string(2, ""));
                if (!loc.isAbsolute() || !folder.toAbsolutePath().normalize().equals(loc.getParent().normalize())) {
                    throw new IllegalArgumentException("initializer " + t.string(8, "?") + " has its data in " + loc
                            + ", outside " + folder);
                }
                r.add(13, new Pb().add(1, "location").add(2, loc.getFileName().toString()));
            } else {
                r.fields.add(f);
            }
        }
        return r.toBytes();
    }
}
