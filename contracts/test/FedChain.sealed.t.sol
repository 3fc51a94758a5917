// SPDX-License-Identifier: Apache-2.0
pragma solidity >=0.8.24 <0.9.0;

import {FedChain} from "../FedChain.sol";

/// @dev The forge cheatcodes used here (forge-std is not vendored: `forge test` runs offline).
interface SealVm {
    function prank(address sender) external;
    function roll(uint256 blockNumber) external;
    function expectRevert(bytes calldata revertData) external;
}

SealVm constant SVM = SealVm(address(uint160(uint256(keccak256("hevm cheat code")))));

/// @notice Sealed updates: commit in the submission window, reveal in the update-reveal window,
/// vote after it (or as soon as every committer has revealed).
contract FedChainSealedTest {
    uint32 internal constant SUBMIT = 10;
    uint32 internal constant REVEAL = 5;
    uint32 internal constant VOTE = 10;
    FedChain internal chain;
    address[] internal members;
    uint256 internal start;

    function setUp() public {
        for (uint256 i = 0; i < 3; ++i) {
            members.push(address(uint160(0x3000 + i)));
        }
        start = block.number;
        chain = new FedChain(
            FedChain.Config(members, keccak256("model"), keccak256("task"), SUBMIT, VOTE, 2, 3, 5, 0, 0, REVEAL)
        );
    }

    function _none() internal pure returns (FedChain.Outcome memory) {
        return FedChain.Outcome(bytes32(0), 0);
    }

    function _commitment(uint256 round, bytes32 update, bytes32 salt, address peer) internal pure returns (bytes32) {
        return keccak256(abi.encode(round, update, salt, peer));
    }

    function _commit(uint256 i, bytes32 update, bytes32 salt) internal {
        SVM.prank(members[i]);
        chain.submit(1, _commitment(1, update, salt, members[i]), _none());
    }

    function _reveal(uint256 i, bytes32 update, bytes32 salt) internal {
        SVM.prank(members[i]);
        chain.revealUpdate(1, update, salt);
    }

    function _phase() internal view returns (FedChain.Phase phase) {
        (, phase,,,,,,) = chain.roundState();
    }

    function test_revealBeforeTheSubmissionWindowClosesIsRefused() public {
        _commit(0, "u0", "s0");
        SVM.expectRevert(abi.encodeWithSelector(FedChain.FedChainUpdateRevealNotOpen.selector, 1, start + SUBMIT));
        _reveal(0, "u0", "s0");
    }

    function test_everyoneCommittedAndRevealedOpensVotingEarly() public {
        _commit(0, "u0", "s0");
        _commit(1, "u1", "s1");
        _commit(2, "u2", "s2");
        require(_phase() == FedChain.Phase.UpdateReveal, "reveal phase once every member committed");
        _reveal(0, "u0", "s0");
        _reveal(1, "u1", "s1");
        require(_phase() == FedChain.Phase.UpdateReveal, "one reveal missing");
        _reveal(2, "u2", "s2");
        require(_phase() == FedChain.Phase.Voting, "voting opens early");
        (,,,,, uint256 submissions,, uint256 reveals) = chain.roundState();
        require(submissions == 3 && reveals == 3, "counts");
        SVM.prank(members[0]);
        chain.vote(1, "m", 7, _none());
    }

    function test_mismatchDoubleRevealAndNonSubmitterAreRefused() public {
        _commit(0, "u0", "s0");
        _commit(1, "u1", "s1");
        SVM.roll(start + SUBMIT);
        SVM.expectRevert(abi.encodeWithSelector(FedChain.FedChainCommitmentMismatch.selector, 1, members[0]));
        _reveal(0, "other", "s0");
        SVM.expectRevert(abi.encodeWithSelector(FedChain.FedChainNoSealedUpdate.selector, 1, members[2]));
        _reveal(2, "u0", "s0");
        _reveal(0, "u0", "s0");
        SVM.expectRevert(abi.encodeWithSelector(FedChain.FedChainNoSealedUpdate.selector, 1, members[0]));
        _reveal(0, "u0", "s0");
        require(_phase() == FedChain.Phase.UpdateReveal, "member 1 has yet to reveal");
        _reveal(1, "u1", "s1");
        // The window is over and every committer revealed: voting is open, reveals are closed.
        require(_phase() == FedChain.Phase.Voting, "voting open");
        SVM.expectRevert(abi.encodeWithSelector(FedChain.FedChainUpdateRevealClosed.selector, 1, start + SUBMIT + REVEAL));
        _reveal(1, "u1", "s1");
    }

    function test_unrevealedCommitmentHoldsVotingUntilTheWindowEnds() public {
        _commit(0, "u0", "s0");
        _commit(1, "u1", "s1");
        _commit(2, "u2", "s2");
        _reveal(0, "u0", "s0");
        _reveal(1, "u1", "s1");
        SVM.expectRevert(abi.encodeWithSelector(FedChain.FedChainVotingNotOpen.selector, 1, start + SUBMIT + REVEAL));
        SVM.prank(members[0]);
        chain.vote(1, "m", 3, _none());
        SVM.roll(start + SUBMIT + REVEAL);
        SVM.expectRevert(abi.encodeWithSelector(FedChain.FedChainUpdateRevealClosed.selector, 1, start + SUBMIT + REVEAL));
        _reveal(2, "u2", "s2");
        SVM.prank(members[0]);
        chain.vote(1, "m", 3, _none());
        SVM.prank(members[1]);
        chain.vote(1, "m", 3, _none());
        require(chain.isOutcome(1, "m", 3), "finalized without the unrevealed update");
        chain.settle(members[2], FedChain.Outcome("m", 3));
        (, uint256 rep,,,) = chain.memberInfo(members[2]);
        require(rep == 500, "an unrevealed commitment is excluded and halved");
    }

    function test_expiryMovesByTheRevealWindow() public {
        (,,, uint256 submitDeadline, uint256 voteDeadline,,,) = chain.roundState();
        require(submitDeadline == start + SUBMIT, "submit deadline");
        require(voteDeadline == start + SUBMIT + REVEAL + VOTE, "expiry");
    }

    /// @dev Only the committer's own (update, salt) opens its commitment; anyone else's is refused.
    function testFuzz_onlyTheCommittedUpdateOpensTheSeal(bytes32 update, bytes32 salt, bytes32 other) public {
        if (update == bytes32(0) || other == update) return;
        if (bytes19(_commitment(1, update, salt, members[0])) == bytes19(0)) return;
        _commit(0, update, salt);
        SVM.prank(members[1]);
        chain.submit(1, _commitment(1, update, salt, members[0]), _none()); // a copied commitment
        SVM.roll(start + SUBMIT);
        SVM.expectRevert(abi.encodeWithSelector(FedChain.FedChainCommitmentMismatch.selector, 1, members[1]));
        _reveal(1, update, salt); // the copier cannot open it
        SVM.expectRevert(abi.encodeWithSelector(FedChain.FedChainCommitmentMismatch.selector, 1, members[0]));
        _reveal(0, other, salt);
        _reveal(0, update, salt);
        require(chain.updateSeal(members[0]) == bytes19(0), "seal cleared");
    }
}
