// swift-tools-version: 6.0
import PackageDescription

// Imports only go down: gpt -> Server -> Generation -> Transformer -> Kernels;
// Training and Evaluation -> Transformer; Transformer also reads tokenizers (BPE), which
// imports nothing of ours (DESIGN.md).
let package = Package(
    name: "SwiftGPT",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "SwiftGPT", targets: ["SwiftGPT"]),
        .executable(name: "gpt", targets: ["gpt"]),
        .executable(name: "gpt-bench", targets: ["gpt-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // The innermost loops only: compiled for AVX2+FMA per function and chosen at run time.
        .target(name: "CKernels"),
        .target(name: "Kernels", dependencies: [
            "CKernels",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "BPE", dependencies: ["CKernels"]),
        .target(name: "Transformer", dependencies: ["Kernels", "BPE"]),
        .target(name: "Training", dependencies: ["Transformer", "Kernels"]),
        .target(name: "Generation", dependencies: ["Transformer", "Kernels"]),
        .target(name: "Evaluation", dependencies: ["Transformer", "Kernels"]),
        .target(name: "Server", dependencies: ["Generation"]),
        .target(name: "SwiftGPT", dependencies: [
            "Kernels", "BPE", "Transformer", "Training", "Generation", "Evaluation", "Server",
        ]),
        .target(name: "CommandSupport", dependencies: [
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "gpt", dependencies: [
            "SwiftGPT", "CommandSupport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "gpt-bench", dependencies: [
            "SwiftGPT", "CommandSupport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Helpers the test targets share (running the Python references, the PyTorch fixtures).
        .target(name: "TestSupport", dependencies: ["Transformer", "Kernels"], path: "Tests/Support"),
        .testTarget(name: "KernelsTests", dependencies: ["TestSupport", "Kernels", "CKernels"]),
        .testTarget(name: "BPETests", dependencies: ["TestSupport", "BPE"], exclude: ["Fixtures"]),
        .testTarget(name: "TransformerTests", dependencies: ["TestSupport", "Transformer", "Kernels", "BPE"], exclude: ["Fixtures"]),
        .testTarget(name: "TrainingTests", dependencies: ["TestSupport", "Training", "Transformer", "Kernels", "BPE"], exclude: ["Fixtures"]),
        .testTarget(name: "GenerationTests", dependencies: ["TestSupport", "Generation", "Transformer", "Kernels", "BPE"]),
        .testTarget(name: "EvaluationTests", dependencies: ["TestSupport", "Evaluation", "Transformer"]),
        .testTarget(name: "ServerTests", dependencies: ["Server"]),
    ],
    swiftLanguageModes: [.v6]
)
