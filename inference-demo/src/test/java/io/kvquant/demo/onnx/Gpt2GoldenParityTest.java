package io.kvquant.demo.onnx;

import java.nio.file.Path;

/**
 * The trained GPT-2-architecture model (models/kvq-gpt2: learned positions, LayerNorm, multi-head
 * attention, fused q/k/v): ONNX Runtime Java against PyTorch, full forward and incremental.
 */
class Gpt2GoldenParityTest extends GoldenParityTest {
    @Override
    Path modelDir() {
        return TestModel.dir("kvq-gpt2");
    }
}
