// AudioWorklet: turns the microphone into 20 ms frames of 8 kHz float samples (160 per frame).
// With no input connected (no microphone, or muted) it still emits frames, of silence, so the
// call's media stream keeps its 50-frames-a-second pace on the audio clock.
// When the context does not run at 8 kHz (browsers that refuse a custom rate), it downsamples by
// averaging each output sample's span of input: a crude low-pass that is fine for speech.

const TARGET_RATE = 8000;

class FrameTap extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.frameSize = (options.processorOptions && options.processorOptions.frameSize) || 160;
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.frame = new Float32Array(this.frameSize);
    this.filled = 0;
    this.sum = 0;
    this.count = 0;
    this.position = 0; // input samples consumed towards the next output sample
  }

  emit(value) {
    this.frame[this.filled] = value;
    this.filled += 1;
    if (this.filled === this.frameSize) {
      this.port.postMessage(this.frame, [this.frame.buffer]);
      this.frame = new Float32Array(this.frameSize);
      this.filled = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    const channel = input && input.length > 0 ? input[0] : null;
    const length = channel ? channel.length : 128;
    if (this.step === 1) {
      for (let i = 0; i < length; i += 1) this.emit(channel ? channel[i] : 0);
      return true;
    }
    for (let i = 0; i < length; i += 1) {
      this.sum += channel ? channel[i] : 0;
      this.count += 1;
      this.position += 1;
      if (this.position >= this.step) {
        this.emit(this.sum / this.count);
        this.sum = 0;
        this.count = 0;
        this.position -= this.step;
      }
    }
    return true;
  }
}

registerProcessor("voicefsm-frame-tap", FrameTap);
