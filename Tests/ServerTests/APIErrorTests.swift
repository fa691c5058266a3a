import Foundation
import XCTest
@testable import Server

final class APIErrorTests: XCTestCase {
    func testBodyHasOpenAIShapeWithExplicitNulls() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(APIError.invalidRequest("max_tokens must be positive", param: "max_tokens").body)
        XCTAssertEqual(String(decoding: data, as: UTF8.self),
                       #"{"error":{"code":null,"message":"max_tokens must be positive","param":"max_tokens","type":"invalid_request_error"}}"#)
        let decoded = try JSONDecoder().decode(APIError.Body.self, from: data)
        XCTAssertEqual(decoded.error.param, "max_tokens")
        XCTAssertNil(decoded.error.code)
    }

    func testStatusCodes() {
        XCTAssertEqual(APIError.invalidAPIKey.status, 401)
        XCTAssertEqual(APIError.modelNotFound("x").status, 404)
        XCTAssertEqual(APIError.bodyTooLarge(limit: 10).status, 413)
        XCTAssertEqual(APIError.rateLimited.status, 429)
        XCTAssertEqual(APIError.overloaded.status, 503)
    }
}
