import XCTest
@testable import Training

final class LearningRateScheduleTests: XCTestCase {
    func testWarmupThenCosine() {
        let s = LearningRateSchedule(peak: 1e-3, minimum: 1e-4, warmupSteps: 10, totalSteps: 110)
        XCTAssertEqual(s.rate(at: 0), 1e-4, accuracy: 1e-9)
        XCTAssertEqual(s.rate(at: 9), 1e-3, accuracy: 1e-9)
        XCTAssertEqual(s.rate(at: 10), 1e-3, accuracy: 1e-9)
        // Halfway through the decay the cosine factor is 0.5: (1e-3 + 1e-4) / 2.
        XCTAssertEqual(s.rate(at: 60), 5.5e-4, accuracy: 1e-8)
        // A quarter of the way: 0.5 * (1 + cos(pi/4)) = 0.853553...
        XCTAssertEqual(s.rate(at: 35), 1e-4 + 0.8535534 * 9e-4, accuracy: 1e-8)
        XCTAssertEqual(s.rate(at: 110), 1e-4, accuracy: 1e-9)
        XCTAssertEqual(s.rate(at: 5000), 1e-4, accuracy: 1e-9)
    }

    func testNoWarmup() {
        let s = LearningRateSchedule(peak: 2, warmupSteps: 0, totalSteps: 4)
        let expected: [Float] = [2, 1.7071068, 1, 0.29289323, 0]
        for (step, rate) in expected.enumerated() {
            XCTAssertEqual(s.rate(at: step), rate, accuracy: 1e-6, "step \(step)")
        }
    }
}
