package io.kvquant.demo.djl;

import ai.djl.BaseModel;
import ai.djl.Device;
import ai.djl.Model;
import ai.djl.engine.Engine;
import ai.djl.engine.EngineProvider;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.AbstractBlock;
import ai.djl.training.ParameterStore;
import ai.djl.util.PairList;
import io.kvquant.demo.onnx.Decoder;
import io.kvquant.demo.onnx.DecoderModel;
import io.kvquant.demo.onnx.JavaAttentionModel;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/**
 * kvquant's engine as a DJL {@link Engine} named {@value #NAME}: a model loaded with
 * {@code Criteria.optEngine("KvQuant")} is the engine of {@code kvq generate} (the graph cut at
 * each attention, prepared and cached on first use; ONNX Runtime runs the dense pieces, kvquant
 * attends on the compressed cache), wrapped as one {@link EngineBlock}. Its block takes
 * {@code input_ids} of the next tokens and returns the logits after the last one; the past never
 * leaves the compressed cache, which {@link KvQuantTranslator} attaches. Arrays are made by DJL's
 * ONNX Runtime engine, which must be on the class path.
 *
 * <p>Model options (Criteria {@code optOption}): {@code threads} (ONNX Runtime intra-op and
 * attention threads; default: ONNX Runtime's choice).
 */
public final class KvQuantEngine extends Engine {

    public static final String NAME = "KvQuant";

    private static final String ARRAYS = "OnnxRuntime";

    /** Registered through META-INF/services: DJL finds the engine by its name. */
    public static final class Provider implements EngineProvider {
        private static volatile KvQuantEngine engine;

        @Override
        public String getEngineName() {
            return NAME;
        }

        @Override
        public int getEngineRank() {
            // never DJL's default engine: it only serves models asked for by name
            return 100;
        }

        @Override
        public Engine getEngine() {
            if (engine == null) {
                synchronized (Provider.class) {
                    if (engine == null) {
                        engine = new KvQuantEngine();
                    }
                }
            }
            return engine;
        }
    }

    @Override
    public Engine getAlternativeEngine() {
        return null;
    }

    @Override
    public String getEngineName() {
        return NAME;
    }

    @Override
    public int getRank() {
        return 100;
    }

    @Override
    public String getVersion() {
        return "kvquant";
    }

    @Override
    public boolean hasCapability(String capability) {
        return false;
    }

    @Override
    public Model newModel(String name, Device device) {
        return new KvQuantModel(name, newBaseManager(device));
    }

    @Override
    public NDManager newBaseManager() {
        return Engine.getEngine(ARRAYS).newBaseManager();
    }

    @Override
    public NDManager newBaseManager(Device device) {
        return Engine.getEngine(ARRAYS).newBaseManager(device);
    }

    /** A model directory (model.onnx, config.json) opened as kvquant's engine. */
    static final class KvQuantModel extends BaseModel {
        private JavaAttentionModel runner;

        KvQuantModel(String name, NDManager manager) {
            super(name);
            this.manager = manager;
        }

        @Override
        public void load(Path modelPath, String prefix, Map<String, ?> options) throws IOException {
            Path dir = Files.isDirectory(modelPath) ? modelPath : modelPath.toAbsolutePath().getParent();
            if (!Files.isRegularFile(dir.resolve("model.onnx"))) {
                throw new IllegalArgumentException("no model.onnx in " + dir + " (the KvQuant engine opens a model "
                        + "directory exported in the Hugging Face/optimum decoder layout)");
            }
            int threads = 0;
            Object t = options == null ? null : options.get("threads");
            if (t != null) {
                try {
                    threads = Integer.parseInt(t.toString().trim());
                } catch (NumberFormatException e) {
                    throw new IllegalArgumentException("KvQuant engine option threads must be a number, got '" + t + "'");
                }
            }
            modelDir = dir;
            runner = JavaAttentionModel.open(dir, new DecoderModel.Options(threads, DecoderModel.Ep.CPU));
            block = new EngineBlock(runner);
            wasLoaded = true;
        }

        @Override
        public void load(InputStream is, Map<String, ?> options) {
            throw new UnsupportedOperationException("the KvQuant engine loads a model directory, not a stream");
        }

        @Override
        public void close() {
            if (runner != null) {
                runner.close();
                runner = null;
            }
            super.close();
        }
    }

    /**
     * The engine as a DJL block over one sequence: {@code forward([input_ids (1, n)])} runs the n
     * tokens at the next positions of the attached decoder's cache and returns
     * {@code [logits (1, 1, vocab)]} after the last one.
     */
    public static final class EngineBlock extends AbstractBlock {
        private final JavaAttentionModel runner;
        private Decoder decoder;

        EngineBlock(JavaAttentionModel runner) {
            this.runner = runner;
        }

        /** The engine's shape: layers, KV heads, head dim. */
        public JavaAttentionModel runner() {
            return runner;
        }

        /** Attaches the decoder (over a compressed cache) that {@link #forward} runs. */
        public void attach(Decoder decoder) {
            this.decoder = decoder;
        }

        @Override
        protected NDList forwardInternal(ParameterStore ps, NDList inputs, boolean training, PairList<String, Object> params) {
            if (decoder == null) {
                throw new IllegalStateException("no cache attached: run this model with a KvQuantTranslator");
            }
            NDArray ids = inputs.get(0);
            long[] tokens = ids.toLongArray();
            float[] logits = decoder.prefill(tokens, null);
            NDArray out = ids.getManager().create(logits, new Shape(1, 1, logits.length));
            out.setName("logits");
            return new NDList(out);
        }

        @Override
        public Shape[] getOutputShapes(Shape[] inputShapes) {
            return new Shape[] {new Shape(1, 1, -1)};
        }
    }
}
