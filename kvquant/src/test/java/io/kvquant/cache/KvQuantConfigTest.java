package io.kvquant.cache;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvquant.codec.RotationKind;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class KvQuantConfigTest {

    @ParameterizedTest
    @ValueSource(strings = {"full", "fp16", "turbo3.5", "turbo2.5", "turbo4", "k4v3", "kivi2", "kivi4",
            "turbo3.5,window=128,boundary=2,qjl=k", "k4v2.5,qjl=kv,sjl=orthogonal,rot=haar,normfix=on,seed=7,page=64",
            "kivi2,window=64,group=64", "turbo3.5,window=0,center=off", "full,center=on", "auto:3.5", "auto:2.5,window=0",
            "turbo3.5,layers=0-1:k8v4,layers=3:full", "k4v3,layers=2:fp16,layers=0:turbo2.5", "kivi2,center=on",
            "turbo3.5,trim=off", "turbo3.5,trim=kv,winbits=32", "auto:3.5,winbits=32", "turbo3.5,mid=0", "turbo2.5,mid=100",
            "turbo3.5,window=0,mid=736", "auto:3.5,mid=64"})
    void compactFormRoundTrips(String s) {
        KvQuantConfig c = KvQuantConfig.parse(s);
        assertEquals(c, KvQuantConfig.parse(c.toString()), s + " -> " + c);
    }

    @Test
    void thePresetsCarryTheMeasuredDefaults() {
        KvQuantConfig c = KvQuantConfig.parse("turbo3.5");
        assertEquals(32, c.window());
        assertEquals(16, c.windowBits());
        assertEquals(KvQuantConfig.Trim.V, c.trim());
        assertTrue(c.center());
        assertEquals("turbo3.5", c.toString());
        assertEquals(736, c.mid());
        assertEquals(32, KvQuantConfig.DEFAULT_TURBO_WINDOW);
        assertEquals(5, c.layerMidBits(0, true));
        assertEquals(5, c.layerMidBits(0, false));
        KvQuantConfig t25 = KvQuantConfig.parse("turbo2.5");
        assertEquals(4, t25.layerMidBits(1, true));
        KvQuantConfig k4v3 = KvQuantConfig.parse("k4v3,layers=1:k8v2");
        assertEquals(5.5, k4v3.layerMidBits(0, true));
        assertEquals(4.5, k4v3.layerMidBits(0, false));
        assertEquals(8, k4v3.layerMidBits(1, true), "at most 8 bits");
        assertEquals(3.5, k4v3.layerMidBits(1, false));
        // no window, no middle tier: the bare codec stays bare; either can be set alone
        assertEquals(0, KvQuantConfig.parse("turbo3.5,window=0,center=off").mid());
        assertEquals(736, KvQuantConfig.parse("turbo3.5,window=128").mid());
        assertEquals(0, KvQuantConfig.parse("turbo3.5,mid=0").mid());
        assertEquals("turbo3.5,mid=0", KvQuantConfig.parse("turbo3.5,mid=0").toString());
        assertEquals(0, KvQuantConfig.parse("full").mid());
        assertEquals(0, KvQuantConfig.parse("kivi2").mid());
        KvQuantConfig old = KvQuantConfig.parse("turbo3.5,trim=off,winbits=32");
        assertEquals(KvQuantConfig.Trim.OFF, old.trim());
        assertEquals(32, old.windowBits());
        assertEquals(32, KvQuantConfig.parse("full").windowBits());
        assertEquals(KvQuantConfig.Trim.OFF, KvQuantConfig.parse("kivi2").trim());
    }

    @Test
    void presetsMeanWhatTheySay() {
        KvQuantConfig c = KvQuantConfig.parse("k4v3,window=128,boundary=2,qjl=k,rot=haar");
        assertEquals(KvQuantConfig.Kind.TURBO, c.kind());
        assertEquals(4, c.keyBits());
        assertEquals(3, c.valueBits());
        assertTrue(c.keyQjl());
        assertFalse(c.valueQjl());
        assertEquals(128, c.window());
        assertEquals(2, c.boundaryLayers());
        assertEquals(RotationKind.HAAR, c.rotation());
        assertTrue(c.isBoundary(0, 8) && c.isBoundary(1, 8) && c.isBoundary(7, 8) && !c.isBoundary(2, 8));
        assertEquals("k4v3,window=128,boundary=2,qjl=k,rot=haar", c.toString());
        assertEquals(KvQuantConfig.Kind.KIVI, KvQuantConfig.parse("kivi2").kind());
    }

    @Test
    void turboPresetsCarryTheMeasuredDefaults() {
        KvQuantConfig c = KvQuantConfig.parse("turbo3.5");
        assertEquals(KvQuantConfig.DEFAULT_TURBO_WINDOW, c.window());
        assertEquals(KvQuantConfig.DEFAULT_CENTER, c.center());
        assertEquals("turbo3.5", c.toString());
        KvQuantConfig bare = KvQuantConfig.parse("turbo3.5,window=0,center=off");
        assertEquals(0, bare.window());
        assertFalse(bare.center());
        assertFalse(KvQuantConfig.parse("full").center());
        assertFalse(KvQuantConfig.parse("kivi2").center());
        assertEquals(32, KvQuantConfig.parse("kivi2").window());
    }

    @Test
    void perLayerOverridesApplyInOrderAndWinOverBoundaryLayers() {
        KvQuantConfig c = KvQuantConfig.parse("turbo3.5,boundary=1,layers=0-2:k8v4,layers=2:turbo2.5,layers=5:fp16");
        assertEquals(KvQuantConfig.Kind.TURBO, c.layerKind(0, 8));
        assertEquals(8, c.layerKeyBits(0));
        assertEquals(4, c.layerValueBits(1));
        assertEquals(2.5, c.layerKeyBits(2));
        assertEquals(2.5, c.layerValueBits(2));
        assertEquals(3.5, c.layerKeyBits(3));
        assertEquals(KvQuantConfig.Kind.FP16, c.layerKind(5, 8));
        assertEquals(KvQuantConfig.Kind.FULL, c.layerKind(7, 8), "boundary layer without an override");
        assertEquals("turbo3.5,boundary=1,layers=0-2:k8v4,layers=2:k2.5v2.5,layers=5:fp16", c.toString());
        KvQuantConfig a = KvQuantConfig.parse("auto:3.5");
        assertTrue(a.needsCalibration());
        assertEquals(3.5, a.autoBits());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> KvCaches.create("turbo3.5,layers=3-4:k8v4", 4, 2, 64));
        assertTrue(e.getMessage().contains("layers=3-4:k8v4") && e.getMessage().contains("4 layers"), e.getMessage());
        try (LayeredKvCache cache = KvCaches.create("turbo3.5,layers=0:k8v4,layers=1:full,layers=2:fp16", 3, 2, 64)) {
            float[] k = new float[2 * 10 * 64];
            java.util.Arrays.fill(k, 0.5f);
            for (int l = 0; l < 3; l++) {
                cache.append(l, k, k, 10);
            }
            assertTrue(cache.store(0) instanceof TurboStore);
            assertTrue(cache.store(1) instanceof DenseStore);
            assertEquals(2L * 2 * 10 * 64 * 4, cache.store(1).bytesUsed(), "full layer: fp32 K and V");
            assertEquals(2L * 2 * 10 * 64 * 2, cache.store(2).bytesUsed(), "fp16 layer");
            assertEquals(12.25, KvCaches.keyCodec(cache.config(), 64, 0).bitsPerElement() + KvCaches.valueCodec(cache.config(), 64, 0)
                    .bitsPerElement(), 1e-9, "k8v4 codecs trimmed to b + 1/8 bits per element with their fp16 norm at d = 64");
        }
    }

    @Test
    void errorsNameTheBadPart() {
        assertMessage("turbo3.5,trim=x", "trim must be kv, v or off");
        assertMessage("turbo3.5,winbits=8", "winbits must be 16 or 32");
        assertMessage("kivi2,trim=v", "TurboQuant");
        assertMessage("kivi2,winbits=16", "TurboQuant");
        assertMessage("turbo3.5,layers=0-1", "layers=<layer or range>:<setting>");
        assertMessage("turbo3.5,layers=a-1:k8v4", "'a-1'");
        assertMessage("turbo3.5,layers=2-1:k8v4", "'2-1'");
        assertMessage("turbo3.5,layers=0:zip", "'zip'");
        assertMessage("turbo3.5,layers=0:k9v4", "layer 0 key bits");
        assertMessage("kivi2,layers=0:k8v4", "TurboQuant");
        assertMessage("auto:3.5,layers=0:k8v4", "layers=0:k8v4");
        assertMessage("auto:9", "auto budget");
        assertMessage("auto:x", "auto:x");
        assertMessage("auto:3.5,boundary=1", "boundary");
        assertMessage("turbo3.5,center=maybe", "center");
        assertMessage("turbo3.5,windw=128", "windw");
        assertMessage("turbo9", "bits");
        assertMessage("turbo3.3", "3.3");
        assertMessage("zip4", "zip4");
        assertMessage("turbo3,qjl=q", "qjl");
        assertMessage("turbo3,window=-1", "window");
        assertMessage("turbo3,window=many", "window=many");
        assertMessage("kivi3", "KIVI");
        assertMessage("fp16,window=8", "window");
        assertMessage("turbo3,mid=-1", "mid must be in [0, 1048576]");
        assertMessage("turbo3,mid=lots", "mid=lots");
        assertMessage("kivi2,mid=8", "option 'mid' applies to TurboQuant settings");
        assertMessage("fp16,mid=8", "mid");
        assertMessage("turbo1,qjl=k", "QJL");
        assertMessage("", "empty");
        assertMessage("turbo3,rot=fft", "fft");
    }

    private static void assertMessage(String spec, String part) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> KvQuantConfig.parse(spec), spec);
        assertTrue(e.getMessage().contains(part), "message for '" + spec + "' should name '" + part + "': " + e.getMessage());
    }
}
