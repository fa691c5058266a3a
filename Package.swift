// swift-tools-version: 6.0
import PackageDescription

// Imports only go down: gpt -> ServerHTTP -> Server -> Generation -> Transformer -> Kernels;
// Training -> Transformer; Evaluation -> Generation, Transformer; Transformer also reads
// tokenizers (BPE), which imports nothing of ours (DESIGN.md). The web stack (Hummingbird, NIO,
// Prometheus) stays in ServerHTTP, which only the executables and its tests import: the SwiftGPT
// library holds the OpenAI request handling and the model loop, and pulls in nothing of it.
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
        .package(url: "https://github.com/swiftcsv/SwiftCSV", from: "0.10.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
    ],
    targets: [
        // The innermost loops only: compiled for AVX2+FMA per function and chosen at run time.
        .target(name: "CKernels"),
        .target(name: "Kernels", dependencies: [
            "CKernels",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "BPE", dependencies: ["CKernels"]),
        // zlib, for the gzip-compressed evaluation files (Debian: zlib1g-dev).
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"]), .brew(["zlib"])]),
        .target(name: "Transformer", dependencies: ["Kernels", "BPE"]),
        .target(name: "Training", dependencies: ["Transformer", "Kernels"]),
        .target(name: "Generation", dependencies: ["Transformer", "Kernels", "CKernels"]),
        .target(name: "Evaluation", dependencies: ["Transformer", "Generation", "BPE", "Kernels", "CKernels", "CZlib",
                                                .product(name: "SwiftCSV", package: "SwiftCSV")]),
        // OpenAI request handling and the model loop (swift-metrics is only the API: no backend).
        .target(name: "Server", dependencies: [
            "Generation", "Transformer", "BPE",
            .product(name: "Metrics", package: "swift-metrics"),
        ]),
        // The HTTP layer: routes, authentication, server-sent events, Prometheus, signals.
        .target(name: "ServerHTTP", dependencies: [
            "Server",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "SwiftGPT", dependencies: [
            "Kernels", "BPE", "Transformer", "Training", "Generation", "Evaluation", "Server",
        ]),
        .target(name: "CommandSupport", dependencies: [
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "gpt", dependencies: [
            "SwiftGPT", "CommandSupport", "ServerHTTP",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "gpt-bench", dependencies: [
            "SwiftGPT", "CommandSupport", "ServerHTTP",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Helpers the test targets share (running the Python references, the PyTorch fixtures).
        .target(name: "TestSupport", dependencies: ["Transformer", "Kernels"], path: "Tests/Support"),
        .testTarget(name: "KernelsTests", dependencies: ["TestSupport", "Kernels", "CKernels"]),
        .testTarget(name: "BPETests", dependencies: ["TestSupport", "BPE", "CommandSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "TransformerTests", dependencies: ["TestSupport", "Transformer", "Kernels", "BPE"], exclude: ["Fixtures"]),
        .testTarget(name: "TrainingTests", dependencies: ["TestSupport", "Training", "Transformer", "Kernels", "BPE"], exclude: ["Fixtures"]),
        .testTarget(name: "GenerationTests", dependencies: ["TestSupport", "Generation", "Transformer", "Kernels", "BPE"]),
        .testTarget(name: "EvaluationTests", dependencies: ["TestSupport", "Evaluation", "Generation", "Transformer", "BPE"]),
        .testTarget(name: "ServerTests", dependencies: [
            "TestSupport", "Server", "ServerHTTP", "Generation", "Transformer", "BPE",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
